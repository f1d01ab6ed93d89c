"""``vlnce table``: evaluations side by side, shaped like VLN-CE's Tables 2 and 3."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rows", nargs="+", metavar="LABEL=DIR[,DIR...]",
                   help="one row: its label, then the --out directories of `vlnce eval` runs of that model "
                        "(one per split), e.g. 'CMA + DA=runs/ev_seen,runs/ev_unseen'")
    p.add_argument("--splits", default="val_seen,val_unseen", help="column groups, in order")
    p.add_argument("--json", action="store_true", help="print {label: {split: metrics}} instead of Markdown")


def parse_row(text: str) -> tuple[str, list[str]]:
    """``'LABEL=DIR,DIR'`` -> (label, dirs). The label may hold '=' and ','; the last '=' separates."""
    from vlnce.errors import ConfigError

    label, sep, dirs = text.rpartition("=")
    paths = [d for d in dirs.split(",") if d]
    if not sep or not label.strip() or not paths:
        raise ConfigError(f"row {text!r}: expected LABEL=DIR[,DIR...] (a label, '=', then evaluation directories)")
    return label.strip(), paths


def run(args) -> int:
    import json

    from agents.evaluation import PAPER_TABLE, load_results, paper_table

    splits = tuple(s for s in args.splits.split(",") if s)
    rows = [(label, [load_results(d) for d in dirs]) for label, dirs in map(parse_row, args.rows)]
    table = paper_table(rows, splits)  # checks the rows for both outputs
    if args.json:
        out = {label: {r["split"]: {"episodes": r["episodes"], **{name: r["metrics"].get(key) for name, key in PAPER_TABLE}}
                       for r in results} for label, results in rows}
        print(json.dumps(out, indent=1))
        return 0
    print(table)
    return 0
