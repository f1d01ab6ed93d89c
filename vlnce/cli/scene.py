"""``vlnce scene build|show``: procedural houses and their top-down maps."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="scene_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="generate a house and save it as GLB")
    b.add_argument("--seed", type=int, required=True, help="house seed (same seed, same file)")
    b.add_argument("--out", required=True, help="output .glb path")
    s = sub.add_parser("show", help="draw a top-down map of a scene with room names")
    s.add_argument("scene", help="scene file (.glb/.obj/.ply) or house:SEED")
    s.add_argument("--out", required=True, help="output .png path")
    s.add_argument("--pixels-per-m", type=float, default=40.0, help="map resolution (pixels per metre)")
    s.add_argument("--up-axis", choices=("y", "z"), default="y", help="up axis of a user mesh")
    s.add_argument("--navigable", action="store_true", help="tint the navigable area")
    from vlnce.cli import walk

    w = sub.add_parser("walk", help="walk through a house to a landmark (pictures, video, JSON)")
    walk.add_arguments(w)


def run(args) -> int:
    from pathlib import Path

    from vlnce.errors import ConfigError

    if args.scene_command == "walk":
        from vlnce.cli import walk

        return walk.run(args)
    if args.scene_command == "build":
        from sim.scenes.generator import generate_house

        if args.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {args.seed}")
        scene = generate_house(args.seed)
        path = scene.save(args.out)
        rooms = ", ".join(r.name for r in scene.rooms)
        print(f"wrote {path} ({scene.num_faces} triangles, {len(scene.rooms)} rooms: {rooms})")
        return 0

    from sim.backends.embedded import resolve_scene
    from sim.navigation.navgrid import build_navgrid
    from sim.viz.topdown import TopDownMap
    from vlnce.fileio import atomic_path

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out must end in .png, got {out}")
    if args.pixels_per_m <= 0 or args.pixels_per_m > 400:
        raise ConfigError(f"--pixels-per-m must be in (0, 400], got {args.pixels_per_m}")
    scene = resolve_scene(args.scene, args.up_axis)
    grid = build_navgrid(scene)
    image = TopDownMap(scene, grid.level_y, args.pixels_per_m).draw(navigable=grid if args.navigable else None)
    with atomic_path(out) as tmp:
        image.save(tmp, format="PNG")
    print(f"wrote {out} ({image.size[0]}x{image.size[1]} px, {len(scene.rooms)} rooms, "
          f"navigable area {grid.navigable_area_m2:.1f} m^2)")
    return 0
