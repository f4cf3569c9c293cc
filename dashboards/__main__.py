"""``python -m dashboards build [--output DIR]``: regenerate the dashboards' JSON files."""

from __future__ import annotations

import argparse
from pathlib import Path

from dashboards.build import GENERATED, write


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboards")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write dashboards/generated/<uid>.json")
    build.add_argument("--output", type=Path, default=GENERATED)
    args = parser.parse_args(argv)
    for path in write(args.output):
        print(path)


if __name__ == "__main__":
    main()
