"""VLN-CE episodes and datasets in the R2R_VLNCE_v1-3 schema (read and written unchanged).

``{split}.json.gz``: ``{"episodes": [...], "instruction_vocab": {...}}``; each episode has
``episode_id``, ``trajectory_id``, ``scene_id``, ``instruction {instruction_text,
instruction_tokens}``, ``start_position [x, y, z]``, ``start_rotation [x, y, z, w]``, ``goals
[{position, radius}]``, ``reference_path`` (start and goal included) and ``info
{geodesic_distance}``. ``{split}_gt.json.gz``: ``{episode_id: {actions, forward_steps,
locations}}``. RxR-CE files (``{split}_{role}.json.gz``, no vocab, extra instruction fields) are
read too. Coordinates stay in Habitat's frame (y up), as in the files.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlnce.errors import DatasetError
from vlnce.fileio import atomic_write_bytes

log = logging.getLogger(__name__)
PAD_INDEX, UNK_INDEX = 0, 1
PAD_TOKEN, UNK_TOKEN = "<PAD>", "<UNK>"
MAX_INSTRUCTION_TOKENS = 200  # VLN-CE pads instruction_tokens to 200
_TOKEN_RE = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks."""
    return _TOKEN_RE.findall(text.lower())


class Vocab:
    """Instruction vocabulary (VLN-CE's VocabDict): ``<PAD>`` = 0, ``<UNK>`` = 1."""

    def __init__(self, word_list: list[str]) -> None:
        if word_list[:2] != [PAD_TOKEN, UNK_TOKEN]:
            word_list = [PAD_TOKEN, UNK_TOKEN] + [w for w in word_list if w not in (PAD_TOKEN, UNK_TOKEN)]
        self.word_list = list(word_list)
        self.word2idx = {w: i for i, w in enumerate(self.word_list)}

    @classmethod
    def build(cls, texts) -> "Vocab":
        words = sorted({w for t in texts for w in tokenize(t)})
        return cls([PAD_TOKEN, UNK_TOKEN] + words)

    def __len__(self) -> int:
        return len(self.word_list)

    def encode(self, text: str, length: int = MAX_INSTRUCTION_TOKENS) -> list[int]:
        ids = [self.word2idx.get(w, UNK_INDEX) for w in tokenize(text)][:length]
        return ids + [PAD_INDEX] * (length - len(ids))

    def to_json(self) -> dict:
        return {"word_list": self.word_list, "word2idx_dict": self.word2idx, "itos": self.word_list,
                "stoi": self.word2idx, "num_vocab": len(self.word_list), "UNK_INDEX": UNK_INDEX,
                "PAD_INDEX": PAD_INDEX}


@dataclass
class Instruction:
    instruction_text: str
    instruction_tokens: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # RxR: instruction_id, language, annotator_id, ...


@dataclass
class Goal:
    position: list[float]
    radius: float = 3.0


@dataclass
class Episode:
    """One VLN-CE episode. Positions in metres, Habitat frame; rotation (x, y, z, w)."""

    episode_id: str
    trajectory_id: str
    scene_id: str
    start_position: list[float]
    start_rotation: list[float]
    instruction: Instruction
    goals: list[Goal]
    reference_path: list[list[float]]
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        ins = {"instruction_text": self.instruction.instruction_text,
               "instruction_tokens": self.instruction.instruction_tokens, **self.instruction.extra}
        return {"episode_id": _maybe_int(self.episode_id), "trajectory_id": _maybe_int(self.trajectory_id),
                "scene_id": self.scene_id, "instruction": ins, "start_position": self.start_position,
                "start_rotation": self.start_rotation,
                "goals": [{"position": g.position, "radius": g.radius} for g in self.goals],
                "reference_path": self.reference_path, "info": self.info}


@dataclass
class GroundTruth:
    """Dense reference of an episode: expert actions and the locations they visit."""

    actions: list[int]
    forward_steps: int
    locations: list[list[float]]

    def to_json(self) -> dict:
        return {"actions": self.actions, "forward_steps": self.forward_steps, "locations": self.locations}


@dataclass
class VLNDataset:
    """Episodes of one split, their vocabulary and (where available) ground truth."""

    split: str
    episodes: list[Episode]
    vocab: Vocab | None = None
    gt: dict[str, GroundTruth] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (episode id, reason)

    def by_id(self) -> dict[str, Episode]:
        return {e.episode_id: e for e in self.episodes}

    def save(self, directory: str | Path, role: str | None = None) -> Path:
        """Write ``DIR/{split}/{split}.json.gz`` and ``{split}_gt.json.gz`` atomically.

        With an RxR-CE ``role`` the files are ``{split}_{role}.json.gz`` and ``{split}_{role}_gt.json.gz``.
        """
        out = Path(directory) / self.split
        stem = f"{self.split}_{role}" if role else self.split
        payload: dict[str, Any] = {"episodes": [e.to_json() for e in self.episodes]}
        if self.vocab is not None:
            payload["instruction_vocab"] = self.vocab.to_json()
        atomic_write_bytes(out / f"{stem}.json.gz", _gzip_json(payload))
        if self.gt:
            gt = {eid: g.to_json() for eid, g in self.gt.items()}
            atomic_write_bytes(out / f"{stem}_gt.json.gz", _gzip_json(gt))
        return out


def _gzip_json(obj) -> bytes:
    # mtime=0: identical content gives identical bytes
    return gzip.compress(json.dumps(obj, separators=(",", ":")).encode(), mtime=0)


def _maybe_int(value: str):
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _read_json_gz(path: Path):
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a gzipped JSON file ({type(exc).__name__}: {exc})") from None


def _vector(raw, n: int, where: str) -> list[float]:
    if not isinstance(raw, (list, tuple)) or len(raw) != n:
        raise DatasetError(f"{where}: expected a list of {n} numbers, got {_short(raw)}")
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise DatasetError(f"{where}: expected finite numbers, got {_short(raw)}")
        out.append(float(v))
    return out


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_episode(raw: dict, where: str) -> Episode:
    """Validate and convert one episode record.

    Raises:
        DatasetError: naming ``where`` (file and episode) and the bad field.
    """
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: an episode must be an object, got {_short(raw)}")
    eid = raw.get("episode_id")
    if eid is None or isinstance(eid, bool) or not isinstance(eid, (int, str)):
        raise DatasetError(f"{where}: field 'episode_id' must be an int or string, got {_short(eid)}")
    where = f"{where} episode {eid}"
    for key in ("scene_id", "instruction", "start_position", "start_rotation", "goals", "reference_path"):
        if key not in raw:
            raise DatasetError(f"{where}: missing field {key!r}")
    if not isinstance(raw["scene_id"], str) or not raw["scene_id"]:
        raise DatasetError(f"{where}: field 'scene_id' must be a non-empty string, got {_short(raw['scene_id'])}")
    ins = raw["instruction"]
    if not isinstance(ins, dict) or not isinstance(ins.get("instruction_text"), str):
        raise DatasetError(f"{where}: field 'instruction.instruction_text' must be a string")
    if not ins["instruction_text"].strip():
        raise DatasetError(f"{where}: field 'instruction.instruction_text' is empty")
    tokens = ins.get("instruction_tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise DatasetError(f"{where}: field 'instruction.instruction_tokens' must be a list of ints")
    goals = raw["goals"]
    if not isinstance(goals, list) or not goals:
        raise DatasetError(f"{where}: field 'goals' must be a non-empty list")
    parsed_goals = []
    for k, g in enumerate(goals):
        if not isinstance(g, dict) or "position" not in g:
            raise DatasetError(f"{where}: goals[{k}] must be an object with a 'position'")
        radius = g.get("radius", 3.0)
        if radius is None:
            radius = 3.0
        parsed_goals.append(Goal(_vector(g["position"], 3, f"{where}: goals[{k}].position"), float(radius)))
    path = raw["reference_path"]
    if not isinstance(path, list) or not path:
        raise DatasetError(f"{where}: field 'reference_path' must be a non-empty list of points")
    info = raw.get("info") or {}
    if not isinstance(info, dict):
        raise DatasetError(f"{where}: field 'info' must be an object")
    extra = {k: v for k, v in ins.items() if k not in ("instruction_text", "instruction_tokens")}
    return Episode(
        episode_id=str(eid),
        trajectory_id=str(raw.get("trajectory_id", eid)),
        scene_id=raw["scene_id"],
        start_position=_vector(raw["start_position"], 3, f"{where}: start_position"),
        start_rotation=_vector(raw["start_rotation"], 4, f"{where}: start_rotation"),
        instruction=Instruction(ins["instruction_text"], list(tokens), extra),
        goals=parsed_goals,
        reference_path=[_vector(p, 3, f"{where}: reference_path[{i}]") for i, p in enumerate(path)],
        info=info,
    )


def parse_ground_truth(raw: dict, where: str) -> GroundTruth:
    if not isinstance(raw, dict) or not isinstance(raw.get("locations"), list) or not raw["locations"]:
        raise DatasetError(f"{where}: ground truth needs a non-empty 'locations' list")
    actions = raw.get("actions", [])
    if not isinstance(actions, list) or not all(isinstance(a, int) and 0 <= a <= 3 for a in actions):
        raise DatasetError(f"{where}: ground-truth 'actions' must be a list of ints in 0..3")
    locs = [_vector(p, 3, f"{where}: locations[{i}]") for i, p in enumerate(raw["locations"])]
    return GroundTruth(list(actions), int(raw.get("forward_steps", sum(a == 1 for a in actions))), locs)


def load_dataset(data_path: str | Path, split: str, *, role: str | None = None, strict: bool = True) -> VLNDataset:
    """Read a split from a R2R_VLNCE-style directory or path template.

    Args:
        data_path: a directory holding ``{split}/{split}.json.gz`` (as R2R_VLNCE_v1-3_preprocessed),
            or a template such as ``data/R2R_VLNCE_v1-3/{split}/{split}.json.gz``.
        split: split name.
        role: RxR-CE role ("guide" or "follower"): reads ``{split}_{role}.json.gz``.
        strict: raise on the first bad episode; when False, skip bad episodes (logged and listed in
            ``dataset.skipped``) so one broken record does not lose the others.

    Raises:
        DatasetError: missing/unreadable file, unknown split, malformed records (strict mode).
    """
    data_path = str(data_path)
    suffix = f"_{role}" if role else ""
    if "{split}" in data_path:
        path = Path(data_path.format(split=split, role=role or ""))
    else:
        root = Path(data_path)
        path = root / split / f"{split}{suffix}.json.gz"
        if not path.is_file() and root.is_dir():
            known = sorted(p.name for p in root.iterdir() if (p / f"{p.name}{suffix}.json.gz").is_file())
            if known:
                raise DatasetError(f"unknown split {split!r} in {root}; available splits: {', '.join(known)}")
    raw = _read_json_gz(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("episodes"), list):
        raise DatasetError(f"{path}: expected an object with an 'episodes' list")
    vocab = None
    vocab_raw = raw.get("instruction_vocab")
    if vocab_raw is not None:
        if not isinstance(vocab_raw, dict) or not isinstance(vocab_raw.get("word_list"), list):
            raise DatasetError(f"{path}: 'instruction_vocab' needs a 'word_list'")
        vocab = Vocab(vocab_raw["word_list"])
    episodes, skipped = [], []
    seen = set()
    for i, rec in enumerate(raw["episodes"]):
        try:
            ep = parse_episode(rec, f"{path}: episodes[{i}]")
            if ep.episode_id in seen:
                raise DatasetError(f"{path}: episodes[{i}]: duplicate episode_id {ep.episode_id}")
            seen.add(ep.episode_id)
            episodes.append(ep)
        except DatasetError as exc:
            if strict:
                raise
            eid = rec.get("episode_id", f"#{i}") if isinstance(rec, dict) else f"#{i}"
            log.warning("skipping episode: %s", exc)
            skipped.append((str(eid), str(exc)))
    gt: dict[str, GroundTruth] = {}
    gt_path = path.with_name(path.name.replace(".json.gz", "_gt.json.gz"))
    if gt_path.is_file():
        raw_gt = _read_json_gz(gt_path)
        if not isinstance(raw_gt, dict):
            raise DatasetError(f"{gt_path}: expected an object keyed by episode id")
        for eid, rec in raw_gt.items():
            try:
                gt[str(eid)] = parse_ground_truth(rec, f"{gt_path}: episode {eid}")
            except DatasetError as exc:
                if strict:
                    raise
                skipped.append((str(eid), str(exc)))
    return VLNDataset(split, episodes, vocab, gt, skipped)
