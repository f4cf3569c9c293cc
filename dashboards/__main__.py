"""``python -m dashboards build [--output DIR] [--profiles DIR ...]``: regenerate the dashboards' JSON.

``--profiles`` adds a site's own device profiles: their fields' roles join the shipped ones', so
the panels read those devices too (docs/profiles.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dashboards.build import GENERATED, write
from firmware_bridge.catalogue import catalogue


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboards")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write dashboards/generated/<uid>.json")
    build.add_argument("--output", type=Path, default=GENERATED)
    build.add_argument(
        "--profiles", type=Path, action="append", default=[], help="a folder of the site's own profiles"
    )
    args = parser.parse_args(argv)
    for path in write(args.output, catalogue(tuple(args.profiles))):
        print(path)


if __name__ == "__main__":
    main()
