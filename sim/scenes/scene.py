"""The scene container and its file formats.

A scene is a triangle soup in the Habitat world frame (metres, y up) where every face carries a
semantic category, an instance id, a colour and a surface pattern. Our procedural scenes also carry
rooms and objects. Scenes are stored as GLB: one glTF mesh per uniform *part* (same instance,
category, colour and pattern) whose labels live in the mesh's glTF ``extras``; rooms and objects
live in the scene's ``extras``. Any GLB/OBJ/PLY mesh can be loaded; its faces are then labelled
``unlabeled`` unless the file says otherwise.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sim.scenes.semantics import CATEGORIES, UNLABELED, category_id
from vlnce.errors import SceneError
from vlnce.fileio import atomic_write_bytes

SCENE_FORMAT_VERSION = 1
PATTERNS: tuple[str, ...] = ("flat", "tiles", "planks", "stripes_vertical", "stripes_horizontal", "grain", "dots")
PATTERN_INDEX = {name: i for i, name in enumerate(PATTERNS)}
SUPPORTED_SUFFIXES = (".glb", ".gltf", ".obj", ".ply")


@dataclass(frozen=True)
class Room:
    """A named room. ``bounds_m`` is the axis-aligned floor rectangle (x0, z0, x1, z1) in metres."""

    room_id: int
    room_type: str
    name: str
    bounds_m: tuple[float, float, float, float]

    def contains(self, x: float, z: float) -> bool:
        x0, z0, x1, z1 = self.bounds_m
        return x0 <= x <= x1 and z0 <= z <= z1

    @property
    def center(self) -> tuple[float, float]:
        x0, z0, x1, z1 = self.bounds_m
        return (0.5 * (x0 + x1), 0.5 * (z0 + z1))


@dataclass(frozen=True)
class SceneObject:
    """An object instance: category name, room, and axis-aligned box (centre and size, metres)."""

    instance_id: int
    category: str
    room_id: int
    center_m: tuple[float, float, float]
    size_m: tuple[float, float, float]


@dataclass
class Scene:
    """A labelled triangle mesh.

    Attributes:
        vertices: (V, 3) float32, metres, Habitat frame (y up).
        faces: (F, 3) int32 vertex indices.
        face_semantic: (F,) int32 category index into ``semantics.CATEGORIES``.
        face_instance: (F,) int32 instance id (0 = no instance).
        face_color: (F, 3) uint8 albedo.
        face_pattern: (F,) uint8 index into ``PATTERNS``.
        rooms: rooms of a procedural house (empty for user meshes).
        objects: object instances (empty for user meshes unless labelled).
        metadata: free-form JSON-able facts (generator, seed, source file).
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_semantic: np.ndarray
    face_instance: np.ndarray
    face_color: np.ndarray
    face_pattern: np.ndarray
    rooms: list[Room] = field(default_factory=list)
    objects: list[SceneObject] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32)
        n = len(self.faces)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise SceneError(f"scene vertices must have shape (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise SceneError(f"scene faces must have shape (F, 3), got {self.faces.shape}")
        if n == 0:
            raise SceneError("scene has no faces")
        if self.faces.min() < 0 or self.faces.max() >= len(self.vertices):
            raise SceneError("scene faces index vertices out of range")
        if not np.isfinite(self.vertices).all():
            raise SceneError("scene vertices contain NaN or inf")
        for name, dtype, shape in (
            ("face_semantic", np.int32, (n,)),
            ("face_instance", np.int32, (n,)),
            ("face_color", np.uint8, (n, 3)),
            ("face_pattern", np.uint8, (n,)),
        ):
            arr = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if arr.shape != shape:
                raise SceneError(f"scene {name} must have shape {shape}, got {arr.shape}")
            setattr(self, name, arr)

    # --- geometry ---------------------------------------------------------------------------
    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def triangles(self) -> np.ndarray:
        """Per-face corner positions, shape (F, 3, 3) float32, metres."""
        return self.vertices[self.faces]

    def face_normals(self) -> np.ndarray:
        """Unit face normals, shape (F, 3) float32 (zero for degenerate faces)."""
        tri = self.triangles().astype(np.float64)
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        return (n / np.where(norm > 0, norm, 1.0)).astype(np.float32)

    @property
    def bounds(self) -> np.ndarray:
        """Axis-aligned bounds, shape (2, 3): min and max corner, metres."""
        return np.stack([self.vertices.min(0), self.vertices.max(0)])

    def room_at(self, x: float, z: float) -> Room | None:
        """The room whose floor rectangle contains (x, z), or None."""
        for room in self.rooms:
            if room.contains(x, z):
                return room
        return None

    def content_hash(self) -> str:
        """A hash of geometry and labels, used as a cache key for derived data (nav grids)."""
        import hashlib

        h = hashlib.sha256()
        for arr in (self.vertices, self.faces, self.face_semantic):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:32]

    # --- GLB I/O -----------------------------------------------------------------------------
    def to_glb_bytes(self) -> bytes:
        """Serialise to GLB bytes; identical scenes give identical bytes."""
        import trimesh

        tm_scene = trimesh.Scene()
        key = np.stack(
            [self.face_instance, self.face_semantic, self.face_pattern,
             self.face_color[:, 0].astype(np.int32), self.face_color[:, 1].astype(np.int32),
             self.face_color[:, 2].astype(np.int32)], axis=1)
        # parts in order of first appearance, so the file layout follows the face order
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        for part, group in enumerate(np.argsort(first, kind="stable")):
            face_ids = np.flatnonzero(inverse == group)
            sub_faces = self.faces[face_ids]
            used, local = np.unique(sub_faces, return_inverse=True)
            color = self.face_color[face_ids[0]]
            mesh = trimesh.Trimesh(
                vertices=self.vertices[used].astype(np.float64),
                faces=local.reshape(-1, 3),
                vertex_colors=np.tile(np.append(color, 255).astype(np.uint8), (len(used), 1)),
                process=False,
            )
            sem = int(self.face_semantic[face_ids[0]])
            mesh.metadata = {
                "vlnce": {
                    "semantic": sem,
                    "category": CATEGORIES[sem] if 0 <= sem < len(CATEGORIES) else "unlabeled",
                    "instance": int(self.face_instance[face_ids[0]]),
                    "pattern": int(self.face_pattern[face_ids[0]]),
                    "color": [int(c) for c in color],
                }
            }
            name = f"part_{part:05d}_{mesh.metadata['vlnce']['category']}"
            tm_scene.add_geometry(mesh, node_name=name, geom_name=name)
        tm_scene.metadata["vlnce_scene"] = {
            "format_version": SCENE_FORMAT_VERSION,
            "rooms": [asdict(r) for r in self.rooms],
            "objects": [asdict(o) for o in self.objects],
            "metadata": self.metadata,
        }
        return tm_scene.export(file_type="glb")

    def save(self, path: str | Path) -> Path:
        """Write the scene as GLB, atomically (a crash leaves no partial file)."""
        path = Path(path)
        if path.suffix.lower() != ".glb":
            raise SceneError(f"{path}: scenes are saved as .glb, got suffix {path.suffix!r}")
        return atomic_write_bytes(path, self.to_glb_bytes())


def load_scene(path: str | Path, *, up_axis: str = "y") -> Scene:
    """Load a scene from GLB/glTF/OBJ/PLY.

    Labels written by ``Scene.save`` are restored exactly. Other meshes get ``unlabeled``
    semantics, one instance per mesh node, and colours from their vertex/face colours or material
    (textures are averaged per face where trimesh can decode them). PLY files with per-face
    ``label``/``category_id`` and ``object_id``/``instance`` properties keep them.

    Args:
        path: mesh file.
        up_axis: "y" (glTF, Habitat) or "z" (many PLY/OBJ scans); "z" meshes are rotated so that
            their z axis becomes y.

    Raises:
        SceneError: missing file, unsupported suffix, unreadable or empty mesh.
    """
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise SceneError(f"{path}: scene file not found")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise SceneError(f"{path}: unsupported scene format {suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}")
    if up_axis not in ("y", "z"):
        raise SceneError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as exc:  # trimesh raises many types for corrupt input
        raise SceneError(f"{path}: could not read mesh ({type(exc).__name__}: {exc})") from exc
    try:
        scene = _scene_from_trimesh(loaded, source=path)
    except SceneError as exc:
        raise SceneError(f"{path}: {exc}") from None
    if up_axis == "z":
        v = scene.vertices
        scene.vertices = np.ascontiguousarray(np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1))
    return scene


def load_scene_bytes(data: bytes, file_type: str = "glb") -> Scene:
    """Load a scene from in-memory bytes (see ``load_scene``)."""
    import trimesh

    try:
        loaded = trimesh.load(io.BytesIO(data), file_type=file_type, process=False)
    except Exception as exc:
        raise SceneError(f"could not read {file_type} bytes ({type(exc).__name__}: {exc})") from exc
    return _scene_from_trimesh(loaded, source=None)


def _scene_from_trimesh(loaded, source: Path | None) -> Scene:
    import trimesh

    if isinstance(loaded, trimesh.Trimesh):
        parts = [(np.eye(4), loaded, "mesh")]
        scene_meta = {}
    elif isinstance(loaded, trimesh.Scene):
        parts = []
        for node in sorted(loaded.graph.nodes_geometry):
            transform, geom_name = loaded.graph[node]
            geom = loaded.geometry[geom_name]
            if isinstance(geom, trimesh.Trimesh):
                parts.append((transform, geom, node))
        scene_meta = loaded.metadata or {}
    else:
        raise SceneError(f"file holds no triangle mesh (got {type(loaded).__name__})")
    parts = [p for p in parts if len(p[1].faces) > 0]
    if not parts:
        raise SceneError("mesh has no triangles")

    verts, faces, sem, inst, col, pat = [], [], [], [], [], []
    offset = 0
    for node_index, (transform, geom, _name) in enumerate(parts):
        v = np.asarray(geom.vertices, dtype=np.float64)
        if not np.allclose(transform, np.eye(4)):
            v = trimesh.transformations.transform_points(v, transform)
        f = np.asarray(geom.faces, dtype=np.int64)
        nf = len(f)
        labels = (geom.metadata or {}).get("vlnce")
        if labels is not None:
            sem.append(np.full(nf, int(labels["semantic"]), np.int32))
            inst.append(np.full(nf, int(labels["instance"]), np.int32))
            col.append(np.tile(np.asarray(labels["color"], np.uint8), (nf, 1)))
            pat.append(np.full(nf, int(labels["pattern"]), np.uint8))
        else:
            s, i = _ply_face_labels(geom, nf)
            sem.append(s if s is not None else np.full(nf, UNLABELED, np.int32))
            inst.append(i if i is not None else np.full(nf, node_index + 1, np.int32))
            col.append(_face_colors(geom))
            pat.append(np.zeros(nf, np.uint8))
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)

    info = scene_meta.get("vlnce_scene", {}) if isinstance(scene_meta, dict) else {}
    rooms = [Room(r["room_id"], r["room_type"], r["name"], tuple(r["bounds_m"])) for r in info.get("rooms", [])]
    objects = [
        SceneObject(o["instance_id"], o["category"], o["room_id"], tuple(o["center_m"]), tuple(o["size_m"]))
        for o in info.get("objects", [])
    ]
    metadata = dict(info.get("metadata", {}))
    if source is not None and not info:
        metadata.setdefault("source", str(source))
    return Scene(
        vertices=np.concatenate(verts),
        faces=np.concatenate(faces),
        face_semantic=np.concatenate(sem),
        face_instance=np.concatenate(inst),
        face_color=np.concatenate(col),
        face_pattern=np.concatenate(pat),
        rooms=rooms,
        objects=objects,
        metadata=json.loads(json.dumps(metadata)),
    )


def _face_colors(geom) -> np.ndarray:
    """Best-effort per-face albedo of a trimesh geometry, (F, 3) uint8; grey when unknown."""
    nf = len(geom.faces)
    try:
        visual = geom.visual
        if getattr(visual, "kind", None) == "texture":
            visual = visual.to_color()
        colors = np.asarray(visual.face_colors)
        if colors.shape == (nf, 4) or colors.shape == (nf, 3):
            return np.ascontiguousarray(colors[:, :3], dtype=np.uint8)
    except Exception:  # an undecodable texture is not fatal: geometry is what navigation needs
        pass
    return np.full((nf, 3), 180, np.uint8)


def _ply_face_labels(geom, nf: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    raw = (geom.metadata or {}).get("_ply_raw", {})
    face = raw.get("face", {}) if isinstance(raw, dict) else {}
    data = face.get("data") if isinstance(face, dict) else None
    if data is None or not hasattr(data, "dtype") or data.dtype.names is None:
        return None, None
    sem = inst = None
    for key in ("label", "semantic", "category_id"):
        if key in data.dtype.names:
            s = np.asarray(data[key]).reshape(-1).astype(np.int32)
            if len(s) == nf:
                sem = np.where((s >= 0) & (s < len(CATEGORIES)), s, UNLABELED).astype(np.int32)
                break
    for key in ("object_id", "instance"):
        if key in data.dtype.names:
            i = np.asarray(data[key]).reshape(-1).astype(np.int32)
            if len(i) == nf:
                inst = i
                break
    return sem, inst


def scene_from_parts(parts: list[dict], **kwargs) -> Scene:
    """Assemble a scene from parts ``{"vertices", "faces", "category", "instance", "color", "pattern"}``."""
    verts, faces, sem, inst, col, pat = [], [], [], [], [], []
    offset = 0
    for p in parts:
        v = np.asarray(p["vertices"], np.float32)
        f = np.asarray(p["faces"], np.int32)
        nf = len(f)
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
        sem.append(np.full(nf, category_id(p["category"]), np.int32))
        inst.append(np.full(nf, int(p["instance"]), np.int32))
        col.append(np.tile(np.asarray(p["color"], np.uint8), (nf, 1)))
        pat.append(np.full(nf, PATTERN_INDEX[p.get("pattern", "flat")], np.uint8))
    return Scene(np.concatenate(verts), np.concatenate(faces), np.concatenate(sem), np.concatenate(inst),
                 np.concatenate(col), np.concatenate(pat), **kwargs)
