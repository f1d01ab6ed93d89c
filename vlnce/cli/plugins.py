"""``vlnce plugins``: the perception plugins installed (entry-point group ``vlnce.perception``)."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    from perception.registry import GROUP, plugins
    from vlnce.errors import ConfigError

    rows = []
    reg = plugins()
    for name in reg.names():
        spec = reg.get(name)
        row = {"name": name, "target": spec.target, "source": spec.source}
        try:
            row.update(spec.load().describe())
        except ConfigError as exc:
            row["error"] = str(exc)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no perception plugins installed (entry-point group {GROUP!r})")
    for r in rows:
        print(f"{r['name']}  ({r['target']}, from {r['source']})")
        if "error" in r:
            print(f"  error: {r['error']}")
            continue
        print(f"  {r['description']}")
        for k, v in r["inputs"].items():
            print(f"  in   {k}: {v}")
        for k, v in r["outputs"].items():
            print(f"  out  {k}: {v}")
    return 0
