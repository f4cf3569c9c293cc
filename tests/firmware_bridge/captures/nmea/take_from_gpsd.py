"""Copies gpsd's regression captures (test/daemon/*.log) and the TPV records of their .chk here.

Run with the path of a gpsd git checkout: ``python take_from_gpsd.py /path/to/gpsd``. A long
capture is cut at an epoch boundary after ``MAX_LINES`` lines; its .chk is cut where gpsd echoes the
first sentence left out, and only its TPV records are kept (the others are sky views and devices).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
MAX_LINES = 300
# capture -> last line to keep when the capture ends in something not worth keeping (else MAX_LINES)
CAPTURES: dict[str, int] = {
    "gr8013-w.log": MAX_LINES,
    "ublox-lea-4s.log": MAX_LINES,
    "ublox-f9p-hpnmea.log": MAX_LINES,
    "mtk-3329.log": MAX_LINES,
    "mt3339.log": MAX_LINES,
    "garmin17n.log": MAX_LINES,
    "foretrex-201.log": MAX_LINES,
    "polarx2.log": MAX_LINES,
    "nmea-rtk.log": MAX_LINES,
    "quectel-L70.log": MAX_LINES,
    "sl869.log": MAX_LINES,
    "st-teseo-liv3f.log": MAX_LINES,
    "ch-4711.log": MAX_LINES,
    "humminbird-M37.log": 60,  # before the receiver's clock jumps back (194124 to 194111)
    "beidou-bd.log": MAX_LINES,
    "telit-pls83-w.log": MAX_LINES,
    "sirfstarv-nmea.log": MAX_LINES,
    "bu353s4.log": MAX_LINES,
    "skytraq-fixB.log": MAX_LINES,
    "furuno_gl_ga.log": MAX_LINES,
}


def _show(repo: Path, path: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, check=True)
    return out.stdout.decode("latin-1")


def _time(line: str) -> str | None:
    """The UTC time field of RMC, GGA, GLL, ZDA (where an epoch starts), else None."""
    parts = line.strip().split("*")[0].split(",")
    kind = parts[0][3:] if parts[0].startswith("$") else ""
    index = {"RMC": 1, "GGA": 1, "ZDA": 1, "GLL": 5}.get(kind)
    return parts[index] if index is not None and index < len(parts) else None


def take(repo: Path, name: str, keep: int) -> None:
    lines = _show(repo, f"test/daemon/{name}").splitlines(keepends=True)
    if len(lines) > keep:
        cut = keep
        last = next((_time(line) for line in reversed(lines[:cut]) if _time(line)), None)
        while cut < len(lines) and _time(lines[cut]) in (None, last):
            cut += 1  # finish the epoch
        lines = lines[:cut]
    sentences = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    tpv: list[str] = []
    echoed = 0
    for line in _show(repo, f"test/daemon/{name}.chk").splitlines():
        if line.startswith("{"):
            if '"class":"TPV"' in line:
                tpv.append(line + "\n")
        elif line.strip():
            if echoed == len(sentences):
                break
            if line.strip() not in sentences[echoed:]:
                raise SystemExit(f"{name}: .chk echoes {line!r}, which is not in the capture from here")
            echoed = sentences.index(line.strip(), echoed) + 1  # gpsd echoes no line it could not frame
    (HERE / name).write_text("".join(lines), encoding="latin-1", newline="")
    (HERE / f"{name}.tpv.jsonl").write_text("".join(tpv), encoding="ascii")


if __name__ == "__main__":
    for capture, keep in CAPTURES.items():
        take(Path(sys.argv[1]), capture, keep)
