"""Download payload handling: stream a tar of `.partN` members to disk, merge parts by byte offset,
verify, and extract zips safely (cp949 member names, nothing written outside the target).

`N` in `.partN` is the part's byte offset, not its index: sort by int(N), never lexically.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import TransferError, UnsafeArchiveError

_PART = re.compile(r"^(?P<prefix>.+)\.part(?P<offset>\d+)$")
CHUNK = 1 << 20


@dataclass
class PartSet:
    """The parts of one file as they arrived: offset -> (path on disk, size)."""

    prefix: str
    parts: dict[int, tuple[Path, int]] = field(default_factory=dict)


def safe_relpath(name: str) -> PurePosixPath:
    """An archive member name as a relative path, or UnsafeArchiveError (absolute, '..', drive)."""
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in p.parts:
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside the target folder")
    parts = [x for x in p.parts if x not in ("", ".")]
    if not parts:
        raise UnsafeArchiveError(f"archive member {name!r} has an empty path")
    return PurePosixPath(*parts)


class CountingReader:
    """Wraps a byte stream and counts what was read (to check Content-Length)."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.count = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        return data


def receive_parts(stream: BinaryIO, staging: Path, sets: dict[str, PartSet], notes: list[str]) -> None:
    """Read a tar stream and write each `.partN` member under `staging`, filling `sets` by prefix.

    A part seen twice (the server has sent a whole part set twice) keeps its first copy. Raises
    TransferError when the stream ends inside a member (the parts completed before stay in `sets`),
    UnsafeArchiveError for a hostile member.
    """
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                _receive_member(tar, member, staging, sets, notes)
    except (tarfile.ReadError, EOFError, OSError) as exc:
        raise TransferError(f"download stream cut short or corrupt: {type(exc).__name__}: {exc}") from None


def _receive_member(tar, member, staging: Path, sets: dict[str, PartSet], notes: list[str]) -> None:
    if member.isdir():
        safe_relpath(member.name)
        return
    if not member.isfile():
        raise UnsafeArchiveError(f"archive member {member.name!r} is a link or device; refused")
    rel = safe_relpath(member.name)
    m = _PART.match(str(rel))
    prefix, offset = (m["prefix"], int(m["offset"])) if m else (str(rel), 0)
    pset = sets.setdefault(prefix, PartSet(prefix))
    if offset in pset.parts:
        notes.append(f"duplicate part {rel} skipped (first copy kept)")
        return
    dest = staging / "parts" / f"{sum(len(s.parts) for s in sets.values()):08d}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    written = _copy(src, dest)
    if written != member.size:
        raise TransferError(f"part {rel} arrived with {written} of {member.size} bytes")
    pset.parts[offset] = (dest, written)


def _copy(src: BinaryIO, dest: Path) -> int:
    n = 0
    with dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            n += len(chunk)
    return n


def merge_parts(pset: PartSet, dest: Path) -> int:
    """Concatenate parts in integer-offset order into `dest`, checking contiguity; returns the size.

    Parts are moved into the merged file one by one (the first is renamed, the rest appended and
    deleted), so peak disk use stays near one copy of the data.
    """
    offsets = sorted(pset.parts)
    if not offsets:  # the stream was cut before any part of this file arrived
        raise TransferError(f"{pset.prefix}: no part of it arrived (the transfer was cut short)")
    expected = 0
    for off in offsets:
        if off != expected:
            raise TransferError(
                f"{pset.prefix}: part at offset {off} but {expected} bytes came before it (a part is missing)"
            )
        expected += pset.parts[off][1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = offsets
    os.replace(pset.parts[first][0], dest)
    with dest.open("ab") as out:
        for off in rest:
            path = pset.parts[off][0]
            with path.open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
            path.unlink()
    return expected


def verify_zip(path: Path) -> None:
    """Raise TransferError unless `path` is a readable zip whose CRC32s all match."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise TransferError(f"{path.name} is not a valid zip ({exc})") from None
    if bad is not None:
        raise TransferError(f"{path.name}: CRC mismatch in member {member_name(bad)!r}")


def split_volumes(path: Path) -> int:
    """For the `.zip` volume of a multi-volume (`zip -s`) archive, how many volumes come before it
    (`X.z01` ... `X.zNN`); 0 for an ordinary zip. Read from the end-of-archive record alone."""
    try:
        with path.open("rb") as f:
            endrec = zipfile._EndRecData(f)  # noqa: SLF001 (the stdlib's own EOCD reader)
    except (OSError, zipfile.BadZipFile):
        return 0
    return int(endrec[zipfile._ECD_DISK_NUMBER]) if endrec else 0  # noqa: SLF001


def volume_paths(last: Path, count: int) -> list[Path]:
    return [last.with_suffix(f".z{i:02d}") for i in range(1, count + 1)]


def join_volumes(last: Path, out: Path) -> zipfile.ZipFile:
    """`X.z01 ... X.zNN` + `X.zip` concatenated at `out`, opened as one zip and verified by CRC.

    A split archive's central directory gives each member's offset within its own volume; in the
    concatenation it is that volume's start plus the offset, so the offsets are corrected after
    opening. A missing volume is an error naming it."""
    volumes = [*volume_paths(last, split_volumes(last)), last]
    missing = [v.name for v in volumes if not v.exists()]
    if missing:
        raise TransferError(
            f"{last.name} is the last volume of a multi-volume zip; missing volume(s) "
            f"{', '.join(missing)} (they arrive as their own filekeys)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    starts, size = [], 0
    with out.open("wb") as joined:
        for volume in volumes:
            starts.append(size)
            with volume.open("rb") as src:
                size += _copy_stream(src, joined)
    f = out.open("rb")
    try:
        endrec = zipfile._EndRecData(f)  # noqa: SLF001
        shift = endrec[zipfile._ECD_LOCATION] - endrec[zipfile._ECD_SIZE] - endrec[zipfile._ECD_OFFSET]  # noqa: SLF001
        zf = zipfile.ZipFile(f)
        for info in zf.infolist():  # zipfile added `shift` to each per-volume offset
            info.header_offset = starts[info.volume] + info.header_offset - shift
        bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, IndexError, ValueError) as exc:
        f.close()
        raise TransferError(
            f"{last.name}: its {len(volumes)} volumes do not form a valid zip ({exc}); zip64 split "
            "sets are not read yet: join them with `7z x` and place the result"
        ) from None
    if bad is not None:
        zf.close()
        raise TransferError(f"{last.name}: CRC mismatch in member {member_name(bad)!r} after joining its volumes")
    return zf


def _copy_stream(src: BinaryIO, dest: BinaryIO) -> int:
    n = 0
    while chunk := src.read(CHUNK):
        dest.write(chunk)
        n += len(chunk)
    return n


def member_name(name: str, flag_bits: int = 0) -> str:
    """Undo zipfile's cp437 decoding of names stored as cp949 without the UTF-8 flag."""
    if flag_bits & 0x800:
        return name
    try:
        return name.encode("cp437").decode("cp949")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


@dataclass
class Extracted:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    conflicts: list[Path] = field(default_factory=list)  # existing file differs: kept, new copy set aside


def extract_zip(path: Path | zipfile.ZipFile, target: Path, conflicts_dir: Path) -> Extracted:
    """Extract every member under `target` (from a zip file, or an open ZipFile such as a joined
    split set). Raw data is immutable: an existing file with other bytes is kept and the incoming
    copy goes under `conflicts_dir`. Hostile members are refused before anything is written."""
    result = Extracted()
    with path if isinstance(path, zipfile.ZipFile) else zipfile.ZipFile(path) as zf:
        path = Path(zf.filename or "archive")
        members = [(info, safe_relpath(member_name(info.filename, info.flag_bits))) for info in zf.infolist()]
        for info, rel in members:
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"{path.name}: member {str(rel)!r} is a symbolic link; refused")
        for info, rel in members:
            if not info.is_dir():
                _extract_member(zf, info, rel, target, conflicts_dir, result)
    return result


def _extract_member(zf, info, rel, target: Path, conflicts_dir: Path, result: Extracted) -> None:
    dest = target / rel
    tmp = dest.with_name(dest.name + ".kocap-tmp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, tmp.open("wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    if not dest.exists():
        os.replace(tmp, dest)
        result.written.append(dest)
    elif _same_bytes(tmp, dest):
        tmp.unlink()
        result.unchanged.append(dest)
    else:
        side = conflicts_dir / rel
        side.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, side)
        result.conflicts.append(side)


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(CHUNK), fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True
