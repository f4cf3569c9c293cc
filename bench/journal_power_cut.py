"""Journal fsync benchmark: what ``journal.fsync: normal`` loses at a power cut, and what ``full`` costs.

    sudo .venv/bin/python bench/journal_power_cut.py [--steps 3000] [--cuts 90] [--rounds 5] [--appends 2000]
        [--paced-seconds 150] [--pace 0.1 0.5]

Runs as root (loop devices, FUSE: see tests/edge/power_cut.py). In one run:

1. loss: the power-cut rig of tests/edge/test_power_cut.py records ``--steps`` appends of 1-5
   readings (batches formed and acknowledged, outages in between) per mode and recovers
   ``--cuts`` cut images; per cut, the readings whose append had returned that are neither
   acknowledged nor back after the restart. Also the disk traffic of each mode: bytes written
   and flushes per reading, as the logging disk saw them (SD-card wear).
2. rate: readings/s journaled on this machine's own disk by the real Journal, polls of 1 and 10
   readings, a batch of 100 formed and acknowledged every 10 polls; ``normal`` (the baseline)
   and ``full`` alternate for ``--rounds`` rounds, medians.
3. paced loss: ``normal`` again for ``--paced-seconds`` at one append every ``--pace`` s (each
   value a run), where the kernel's writeback (``vm.dirty_expire_centisecs``, ext4's 5 s commit)
   as well as WAL checkpoints bound the loss; also how long before the cut the oldest lost
   reading had been journaled (``lost_seconds``).

The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.journal import Journal
from tests.edge.blackout_disk import FLUSH, WRITE, records, replay
from tests.edge.power_cut import (
    Fsync,
    cut_points,
    judge,
    reading,
    record,
    recover,
    unavailable,
)


def losses(folder: Path, fsync: Fsync, steps: int, cuts: int, pace: float = 0.0) -> dict[str, float]:
    run = record(folder / fsync, fsync, steps=steps, seed=21, pace=pace)
    lost, seconds = [], []
    for cut, keep in cut_points(run, cuts, seed=22):
        verdict = judge(run, cut, recover(bytes(replay(run.base, run.log, cut, keep)), fsync, folder / fsync))
        if verdict.must_survive_lost or verdict.holes or verdict.twice or (fsync == "full" and verdict.lost):
            raise SystemExit(f"{fsync}: a cut broke the journal's guarantees: {verdict}")
        lost.append(len(verdict.lost))
        seconds.append(verdict.lost_seconds)
    low, high = run.window()
    traffic = [r for r in records(run.log) if low <= r.end <= high]
    readings = run.appended()
    quantiles = statistics.quantiles(lost, n=10)
    return {
        "cuts": len(lost),
        "lost_p50": statistics.median(lost),
        "lost_p90": quantiles[-1],
        "lost_max": max(lost),
        "cuts_losing_share": round(sum(1 for n in lost if n) / len(lost), 2),
        "lost_seconds_p90": round(statistics.quantiles(seconds, n=10)[-1], 1),
        "lost_seconds_max": round(max(seconds), 1),
        "readings_per_s": round(readings / run.seconds),
        "disk_bytes_per_reading": round(sum(len(r.data) for r in traffic if r.kind == WRITE) / readings),
        "flushes_per_reading": round(sum(1 for r in traffic if r.kind == FLUSH) / readings, 3),
    }


def rate(folder: Path, fsync: Fsync, appends: int, per_poll: int) -> float:
    """Readings/s journaled by polls of ``per_poll`` readings, a batch acknowledged every 10 polls."""
    path = folder / f"rate-{fsync}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    journal = Journal(path, "pi-bench", fsync=fsync)
    polls = [[reading(n * per_poll + i) for i in range(per_poll)] for n in range(appends)]
    started = time.perf_counter()
    for n, poll in enumerate(polls):
        journal.append(poll)
        if n % 10 == 9 and (batch := journal.form_batch(100, live=True)) is not None:
            journal.ack(batch.seq)
    seconds = time.perf_counter() - started
    journal.close()
    return appends * per_poll / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="appends recorded per mode for the cuts")
    parser.add_argument("--cuts", type=int, default=90, help="cut images recovered per mode")
    parser.add_argument("--paced-seconds", type=float, default=150, help="length of each paced normal run")
    parser.add_argument(
        "--pace",
        type=float,
        nargs="+",
        default=[0.1, 0.5],
        help="seconds between appends, one paced run each",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--appends", type=int, default=2000, help="polls journaled per rate round")
    args = parser.parse_args()
    missing = unavailable()
    if missing:
        raise SystemExit(f"cannot record power cuts here: {missing}")
    result: dict[str, object] = {"bench": "journal_power_cut", "steps": args.steps}
    with tempfile.TemporaryDirectory(prefix="citygw-blackout-") as tmp:
        folder = Path(tmp)
        for fsync in ("normal", "full"):
            loss = losses(folder, fsync, args.steps, args.cuts)
            print(f"{fsync}: readings lost at a cut over {loss['cuts']} cuts: {loss}", flush=True)
            result[f"{fsync}_loss"] = loss
        for pace in args.pace:
            steps = round(args.paced_seconds / pace)
            loss = losses(folder / f"paced-{pace}", "normal", steps, args.cuts, pace)
            print(f"normal, one append every {pace} s: readings lost at a cut: {loss}", flush=True)
            result[f"normal_paced_{pace}_loss"] = loss
        with tempfile.TemporaryDirectory(prefix="citygw-rate-", dir="/var/tmp") as disk:
            for per_poll in (1, 10):
                rates: dict[Fsync, list[float]] = {"normal": [], "full": []}
                for _ in range(args.rounds):
                    for fsync in ("normal", "full"):
                        rates[fsync].append(rate(Path(disk), fsync, args.appends, per_poll))
                normal, full = statistics.median(rates["normal"]), statistics.median(rates["full"])
                print(
                    f"polls of {per_poll}: normal {normal:,.0f} readings/s, full {full:,.0f} readings/s "
                    f"(full/normal {full / normal:.3f})",
                    flush=True,
                )
                result[f"rate_poll{per_poll}"] = {
                    "normal_per_s": round(normal),
                    "full_per_s": round(full),
                    "full_vs_normal": round(full / normal, 3),
                }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
