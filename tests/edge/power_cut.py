"""Power cuts under the edge journal: record a run on a logging disk, then recover from cut images.

``record`` journals readings with the real ``edge.journal.Journal`` (batches formed and
acknowledged as the publisher does, in a process of its own) on ext4 over a loop device over
``blackout_disk``, which logs every write and flush. The writer notes, after each call returns,
how far the disk log had got (``pos``) and, after each append, SQLite's WAL state from the
``-shm`` file (salt, last frame, frames checkpointed), so a cut at any log offset tells which
appends had returned, which were already checkpointed and synced, and which batches the broker
had acknowledged. ``recover`` mounts a cut image (ext4 replays its journal), checks the file
system and the database, reopens the journal and reads back every reading it would publish;
``judge`` holds that against the guarantees of ``journal.fsync``.

Needs root, loop devices and FUSE (``fuse3``, ``mfusepy``); ``unavailable()`` says what is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from unittest import mock

from citygw.contract import wire
from edge import journal as journal_module
from edge.journal import Journal
from tests.edge.blackout_disk import FLUSH, HEADER, records

Fsync = Literal["normal", "full"]
AGENT = "pi-blackout"
DISK_MB = 48
DB = "journal.sqlite"
# Small segments, so that a short run drops many (DROP TABLE) as a long one would.
SEGMENT_READINGS = 512
INFLIGHT = 4  # batches awaiting their PUBACK at once, as publish.inflight
PHASE_STEPS = (100, 300)  # appends while the broker is reachable, then while it is not, and so on
# WAL index header in the -shm file (native byte order): mxFrame at 16, aSalt[0] at 32, nBackfill at 96.
_SHM = struct.Struct("=16xI12xI60xI")
ROOT = Path(__file__).resolve().parents[2]


def unavailable() -> str | None:
    """Why power cuts cannot be recorded on this machine, or None."""
    if os.geteuid() != 0:
        return "needs root (loop devices, mount)"
    if not Path("/dev/fuse").exists() or not Path("/dev/loop-control").exists():
        return "needs /dev/fuse and /dev/loop-control (kernel FUSE and loop devices)"
    for tool in ("losetup", "mount", "umount", "mkfs.ext4", "e2fsck"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian: util-linux, mount, e2fsprogs)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"needs libfuse3 (Debian: fuse3) for mfusepy: {exc}"
    return None


def _run(*cmd: str | Path) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@contextlib.contextmanager
def _loop_mount(image: Path, mountpoint: Path) -> Iterator[Path]:
    """``image`` as ext4 on a loop device at ``mountpoint`` (mounting replays the ext4 journal)."""
    device = _run("losetup", "--find", "--show", image).strip()
    try:
        mountpoint.mkdir(exist_ok=True)
        _run("mount", "-t", "ext4", device, mountpoint)
        try:
            yield mountpoint
        finally:
            _run("umount", mountpoint)
    finally:
        _run("losetup", "--detach", device)


def reading(n: int) -> wire.Reading:
    return wire.Reading(
        device=f"aq-{n % 7}",
        measurement="air_quality",
        ts=1_700_000_000_000 + n * 1000,
        fields={"n": n, "pm25": round(n * 0.37 % 80, 2), "no2": n % 113},
        tags={"site": "market-square"},
    )


@dataclass
class Run:
    """A recorded run: the disk before it, its write/flush log, what the writer saw and when."""

    fsync: Fsync
    base: bytes
    log: bytes
    events: list[dict[str, Any]]
    seconds: float  # the writer's time, for its rate

    def appended(self) -> int:
        return sum(e["last"] - e["first"] + 1 for e in self.events if e["e"] == "append")

    def window(self) -> tuple[int, int]:
        """The log offsets between the writer's first and last call."""
        return self.events[0]["pos"], self.events[-1]["pos"]


def record(folder: Path, fsync: Fsync, *, steps: int, seed: int, pace: float = 0.0) -> Run:
    """Journal ``steps`` appends (and the batches and acks among them) on a logging disk,
    one every ``pace`` seconds (0: as fast as the disk allows)."""
    folder.mkdir(parents=True, exist_ok=True)
    base, live, log = folder / "base.img", folder / "live.img", folder / "disk.log"
    fuse, mnt, witness = folder / "fuse", folder / "mnt", folder / "witness.jsonl"
    for path in (live, log, witness):
        path.unlink(missing_ok=True)
    with base.open("wb") as f:
        f.truncate(DISK_MB << 20)
    _run("mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", base)
    shutil.copyfile(base, live)
    fuse.mkdir(exist_ok=True)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "tests.edge.blackout_disk", str(live), str(log), str(fuse)],
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        while not (fuse / "disk").exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"blackout_disk did not mount: {daemon.communicate()[1].decode()}")
            time.sleep(0.05)
        with _loop_mount(fuse / "disk", mnt):
            started = time.monotonic()
            writer = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.edge.power_cut",
                    str(mnt / DB),
                    fsync,
                    str(witness),
                    str(log),
                    str(steps),
                    str(seed),
                    str(pace),
                ],
                capture_output=True,
                text=True,
                check=False,
                cwd=ROOT,
                timeout=600,
            )
            seconds = time.monotonic() - started
            if writer.returncode != 0:
                raise RuntimeError(f"the journal writer failed: {writer.stderr}")
    finally:
        with contextlib.suppress(RuntimeError):
            _run("umount", fuse)
        daemon.wait(timeout=20)
    events = [json.loads(line) for line in witness.read_text().splitlines()]
    return Run(fsync, base.read_bytes(), log.read_bytes(), events, seconds)


def write(db: Path, fsync: Fsync, witness: Path, log: Path, steps: int, seed: int, pace: float) -> None:
    """The writer: appends 1-5 readings at a time; forms, publishes and acknowledges as the publisher
    while the broker is reachable, and only appends during outages.

    Exits without closing the journal: what is on disk is what a power cut finds.
    """
    rng = random.Random(seed)
    out = witness.open("w", buffering=1)
    shm: int | None = None

    def note(event: dict[str, Any]) -> None:
        out.write(json.dumps({**event, "pos": os.stat(log).st_size, "t": time.monotonic()}) + "\n")

    with mock.patch.object(journal_module, "SEGMENT_READINGS", SEGMENT_READINGS):
        journal = Journal(db, AGENT, fsync=fsync)
        n = 0
        inflight: list[int] = []
        online, phase = True, rng.randint(*PHASE_STEPS)
        for _ in range(steps):
            time.sleep(pace)
            count = rng.randint(1, 5)
            journal.append([reading(i) for i in range(n, n + count)])
            if shm is None:
                shm = os.open(db.with_name(db.name + "-shm"), os.O_RDONLY)
            mx, salt, backfill = _SHM.unpack(os.pread(shm, _SHM.size, 0))
            note({"e": "append", "first": n, "last": n + count - 1, "salt": salt, "mx": mx, "bf": backfill})
            n += count
            phase -= 1
            if phase == 0:
                online, phase = not online, rng.randint(*PHASE_STEPS)
                if online:
                    journal.mark_live()  # a reconnect: what is on disk becomes backlog
            if not online:
                continue  # the broker is away: the backlog grows across checkpoints
            if len(inflight) < INFLIGHT and rng.random() < 0.3:
                batch = journal.form_batch(rng.randint(5, 60), live=rng.random() < 0.7)
                if batch is not None:
                    ns = [r["fields"]["n"] for r in json.loads(batch.payload)["readings"]]
                    note({"e": "formed", "seq": batch.seq, "ns": ns, "sha": _sha(batch.payload)})
                    inflight.append(batch.seq)
            if inflight and (len(inflight) >= INFLIGHT or rng.random() < 0.25):
                seq = inflight.pop(0 if rng.random() < 0.8 else rng.randrange(len(inflight)))
                # The broker has the batch from the PUBACK on, before ack() writes anything.
                note({"e": "acked", "seq": seq})
                journal.ack(seq)
    out.close()
    os._exit(0)  # no close(), no checkpoint at exit: the power goes


def _sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass
class Outcome:
    """What a journal reopened after a cut would publish: each reading's n → (seq, batch digest)."""

    readings: dict[int, tuple[int, str]] = field(default_factory=dict)
    twice: list[int] = field(default_factory=list)  # readings found in more than one batch


def recover(image: bytes, fsync: Fsync, folder: Path) -> Outcome:
    """Mount a cut image, check file system and database, reopen the journal and drain it."""
    path = folder / "cut.img"
    path.write_bytes(image)
    outcome = Outcome()
    with (
        _loop_mount(path, folder / "cut"),
        mock.patch.object(journal_module, "SEGMENT_READINGS", SEGMENT_READINGS),
    ):
        db = folder / "cut" / DB
        journal = Journal(db, AGENT, fsync=fsync)  # first: it recovers the WAL itself
        try:
            check = sqlite3.connect(db)  # while the journal is open: no checkpoint at its close
            try:
                (verdict,) = check.execute("PRAGMA integrity_check").fetchone()
            finally:
                check.close()
            if verdict != "ok":
                raise AssertionError(f"journal database corrupt after the cut: {verdict}")
            batches = [(b.seq, b.payload) for b in journal.formed_batches()]
            for live in (False, True):
                while (batch := journal.form_batch(wire.MAX_READINGS_PER_BATCH, live=live)) is not None:
                    batches.append((batch.seq, batch.payload))
        finally:
            journal.close()
    for seq, payload in batches:
        for reading in json.loads(payload)["readings"]:
            n = reading["fields"]["n"]
            if n in outcome.readings:
                outcome.twice.append(n)
            outcome.readings[n] = (seq, _sha(payload))
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(path)], capture_output=True, text=True, check=False)
    if fsck.returncode != 0:
        raise AssertionError(f"ext4 inconsistent after the cut and its recovery: {fsck.stdout}")
    return outcome


def cut_points(run: Run, count: int, seed: int) -> list[tuple[int, frozenset[int] | None]]:
    """``count`` cuts inside the run: just before and just after flushes, and anywhere, with the
    volatile writes (those since the last flush) all lost, all kept, or a random half kept."""
    low, high = run.window()
    volatile: dict[int, int] = {}  # log offset of a record boundary -> writes since the last flush
    flushes, pending = [], 0
    for r in records(run.log):
        pending = 0 if r.kind == FLUSH else pending + 1
        if low <= r.end <= high:
            volatile[r.end] = pending
            if r.kind == FLUSH:
                flushes.append(r.end)
    rng = random.Random(seed)
    candidates = sorted(
        {
            *flushes,
            *(f - HEADER.size for f in flushes),
            *rng.sample(sorted(volatile), min(len(volatile), count)),
        }
    )
    chosen = [candidates[round(i * (len(candidates) - 1) / max(count - 1, 1))] for i in range(count)]
    cuts: list[tuple[int, frozenset[int] | None]] = []
    for index, cut in enumerate(sorted(set(chosen))):
        kind = index % 3
        if kind == 0:
            cuts.append((cut, frozenset()))
        elif kind == 1:
            cuts.append((cut, None))
        else:
            cuts.append((cut, frozenset(i for i in range(volatile.get(cut, 0)) if rng.random() < 0.5)))
    return cuts


@dataclass
class Verdict:
    """A cut held against the guarantees: ``lost`` readings whose append had returned, never delivered."""

    cut: int
    returned: int  # readings whose append had returned
    lost: list[int]
    must_survive_lost: list[int]  # lost although synced (``full``: returned; ``normal``: checkpointed)
    holes: list[int]  # lost although a later reading survived
    wrong_batch: list[int]  # readings of a batch formed before the cut back in another batch
    changed_bytes: list[int]  # seqs formed before the cut back with other bytes
    twice: list[int]
    duplicates: int  # acknowledged readings that will be published again
    lost_seconds: float  # how long before the cut the oldest lost reading had been journaled


def judge(run: Run, cut: int, outcome: Outcome) -> Verdict:
    """Hold one recovered cut against what ``journal.fsync`` promises (see docs/interfaces.md)."""
    before = [e for e in run.events if e["pos"] <= cut]
    returned: dict[int, int] = {}  # n -> index of its append event
    formed: dict[int, dict[str, Any]] = {}
    acked: dict[int, int] = {}  # n -> seq
    appends = [e for e in before if e["e"] == "append"]
    for index, event in enumerate(appends):
        for n in range(event["first"], event["last"] + 1):
            returned[n] = index
    for event in before:
        if event["e"] == "formed":
            formed[event["seq"]] = event
        elif event["e"] == "acked":
            acked.update((n, event["seq"]) for n in formed[event["seq"]]["ns"])
    if run.fsync == "full":
        synced = set(returned)
    else:
        # Checkpointed: a later append saw the WAL restarted (new salt) or backfilled past its frame.
        synced_upto = -1
        newest_salt, newest_bf = None, -1
        for index in range(len(appends) - 1, -1, -1):
            event = appends[index]
            if newest_salt is None:
                newest_salt, newest_bf = event["salt"], event["bf"]
            if event["salt"] != newest_salt or event["mx"] <= newest_bf:
                synced_upto = index
                break
        synced = {n for n, index in returned.items() if index <= synced_upto}
    back = outcome.readings
    lost = sorted(n for n in returned if n not in back and n not in acked)
    top = max(back, default=-1)
    return Verdict(
        cut=cut,
        returned=len(returned),
        lost=lost,
        must_survive_lost=[n for n in lost if n in synced],
        holes=[n for n in lost if n < top],
        wrong_batch=sorted(
            n for seq, event in formed.items() for n in event["ns"] if n in back and back[n][0] != seq
        ),
        changed_bytes=sorted(
            {seq for n, (seq, sha) in back.items() if seq in formed and formed[seq]["sha"] != sha}
        ),
        twice=outcome.twice,
        duplicates=sum(1 for n in acked if n in back),
        lost_seconds=before[-1]["t"] - appends[returned[lost[0]]]["t"] if lost else 0.0,
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="the journal writer of a power-cut run (see record)")
    parser.add_argument("db", type=Path)
    parser.add_argument("fsync", choices=["normal", "full"])
    parser.add_argument("witness", type=Path)
    parser.add_argument("log", type=Path)
    parser.add_argument("steps", type=int)
    parser.add_argument("seed", type=int)
    parser.add_argument("pace", type=float)
    args = parser.parse_args(argv)
    write(args.db, args.fsync, args.witness, args.log, args.steps, args.seed, args.pace)


if __name__ == "__main__":
    main(sys.argv[1:])
