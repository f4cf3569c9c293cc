"""The GTFS zip as an archive: which members it may hold, and reading them within fixed bounds.

Checked before anything is decompressed: every member is a plain file at the zip's root (the GTFS
reference puts the files there; the zip is served byte for byte to journey planners that unpack
it, so a folder, a ``..``, an absolute path, a backslash or a name given twice, also in another case,
is refused, and so is a local header naming a member otherwise than the central directory), and
the declared uncompressed sizes are within ``MAX_MEMBER_BYTES`` and ``MAX_TOTAL_BYTES`` (zipfile
never returns more than a member's declared size). While a file is read, a line longer than
``MAX_LINE_BYTES`` stops it: one 2 GB line in a 2 MB zip is refused after reading 64 KiB.
"""

from __future__ import annotations

import codecs
import re
import zipfile
from collections.abc import Iterator
from typing import IO

MAX_MEMBER_BYTES = 512 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024
_CHUNK_BYTES = 256 * 1024
_AT_ROOT = "GTFS files must be at the zip's root (zip the files, not their folder)"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class LineTooLong(ValueError):
    """A line of a member is longer than the bound; ``line`` is its number (the header is 1)."""

    def __init__(self, line: int, max_bytes: int) -> None:
        super().__init__(f"line {line} is longer than {max_bytes} bytes")
        self.line = line


def member_problems(
    archive: zipfile.ZipFile,
    *,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> list[tuple[str, str]]:
    """(member name, reason) for every member that may not be in a published GTFS zip; [] when all may.

    Reads the central directory and each member's local header, decompresses nothing.
    """
    problems: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    total = 0
    for info in archive.infolist():
        name = info.filename
        shown = name[:200]
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            problems.append((shown, "an absolute path; GTFS files are plain names at the zip's root"))
            continue
        if ".." in parts:
            problems.append((shown, "leads out of the folder it is unpacked in ('..')"))
            continue
        if parts[0] == "__MACOSX":
            problems.append((shown, "is macOS Finder metadata; make the zip without it (e.g. zip -X)"))
            continue
        if info.is_dir() or len(parts) > 1:
            problems.append((shown, f"is in a folder; {_AT_ROOT}"))
            continue
        if not _PLAIN_NAME.match(name):
            problems.append((shown, "is not a plain file name (letters, digits, '_', '.', '-')"))
            continue
        if name.lower() in seen:
            problems.append((shown, f"is in the zip twice (as {seen[name.lower()]!r} too)"))
            continue
        seen[name.lower()] = name
        if info.file_size > max_member_bytes:
            problems.append((shown, f"unpacks to {info.file_size} bytes; at most {max_member_bytes}"))
        total += info.file_size
    if total > max_total_bytes:
        problems.append(("(zip)", f"unpacks to {total} bytes in all; at most {max_total_bytes}"))
    if not problems:
        for info in archive.infolist():
            try:  # reads the local header: its name must be the directory's; encryption, method
                archive.open(info.filename).close()  # by name: the errors name it so
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
                problems.append((info.filename[:200], f"cannot be read from the zip ({exc})"))
    return problems


def text_lines(raw: IO[bytes], *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """The UTF-8 lines of ``raw`` with their endings (a leading BOM dropped); ``LineTooLong`` past the bound.

    Never holds more than one chunk and one line; ``UnicodeDecodeError`` for bytes that are not UTF-8.
    """
    pending = b""
    number = 0
    while chunk := raw.read(_CHUNK_BYTES):
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        for line in lines:
            number += 1
            if len(line) > max_line_bytes:
                raise LineTooLong(number, max_line_bytes)
            yield _text(line, number) + "\n"
        if len(pending) > max_line_bytes:
            raise LineTooLong(number + 1, max_line_bytes)
    if pending:
        yield _text(pending, number + 1)


def _text(line: bytes, number: int) -> str:
    return (line.removeprefix(codecs.BOM_UTF8) if number == 1 else line).decode("utf-8")
