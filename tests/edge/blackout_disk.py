"""A disk that remembers every write and flush, for power-cut tests (dm-log-writes, in user space).

The kernel here has no device-mapper, nbd or ublk, but it has FUSE and loop devices. This FUSE
file system shows one file, ``disk``, backed by an image; a loop device over it carries a real
ext4, so SQLite's fsync goes through ext4 and jbd2 to a block-layer flush, which the loop device
turns into an fsync of ``disk``. Every write reaching ``disk`` and every fsync is appended to a
log (records: kind, offset, length, data) before it is answered; replaying the log up to any
record gives the disks a power cut at that moment may leave (see ``replay``).

Run as a process of its own: ``python -m tests.edge.blackout_disk IMAGE LOG MOUNTPOINT``.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

WRITE, FLUSH = b"W", b"F"
HEADER = struct.Struct("<cQI")  # kind, offset, length; then `length` bytes of data for a write
DISK = "/disk"


@dataclass(frozen=True)
class Record:
    """One entry of the log: a write (its data) or a flush; ``end`` is the log offset after it."""

    kind: bytes
    offset: int
    data: bytes
    end: int


def records(log: bytes) -> Iterator[Record]:
    """The log's records in the order the disk received them."""
    at = 0
    while at + HEADER.size <= len(log):
        kind, offset, length = HEADER.unpack_from(log, at)
        at += HEADER.size
        if at + length > len(log):
            raise ValueError(f"log truncated inside the record at {at - HEADER.size}")
        yield Record(kind, offset, log[at : at + length], at + length)
        at += length


def replay(base: bytes, log: bytes, cut: int, keep: frozenset[int] | None) -> bytearray:
    """The disk after a power cut at log offset ``cut``.

    Every write before the last flush preceding ``cut`` is on it; of the writes after that flush
    (in the volatile cache when the power went), those whose index is in ``keep`` are too
    (``None``: all of them, as if the cache had been written out just in time).
    """
    image = bytearray(base)
    pending: list[Record] = []
    for record in records(log):
        if record.end > cut:
            break
        if record.kind == FLUSH:
            for write in pending:
                image[write.offset : write.offset + len(write.data)] = write.data
            pending = []
        else:
            pending.append(record)
    for index, write in enumerate(pending):
        if keep is None or index in keep:
            image[write.offset : write.offset + len(write.data)] = write.data
    return image


def _operations(image_path: str, log_path: str) -> Any:
    import mfusepy

    class RecordingDisk(mfusepy.Operations):  # type: ignore[misc]
        """One file, ``/disk``: reads from the image, writes and fsyncs logged before they return."""

        use_ns = True

        def __init__(self) -> None:
            self.image = os.open(image_path, os.O_RDWR)
            self.size = os.fstat(self.image).st_size
            self.log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
            if path == DISK:
                return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": self.size}
            raise mfusepy.FuseOSError(errno.ENOENT)

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", DISK[1:]]

        def open(self, path: str, flags: int) -> int:
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(self.image, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            if offset + len(data) > self.size:
                raise mfusepy.FuseOSError(errno.ENOSPC)
            os.write(self.log, HEADER.pack(WRITE, offset, len(data)) + data)
            os.pwrite(self.image, data, offset)
            return len(data)

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            os.write(self.log, HEADER.pack(FLUSH, 0, 0))
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0  # close(): not a disk flush

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            raise mfusepy.FuseOSError(errno.EPERM)

    return RecordingDisk()


def main(argv: list[str]) -> None:
    import mfusepy

    image_path, log_path, mountpoint = argv
    # One thread: records are logged in the order the kernel sent them.
    mfusepy.FUSE(_operations(image_path, log_path), mountpoint, foreground=True, nothreads=True)


if __name__ == "__main__":
    main(sys.argv[1:])
