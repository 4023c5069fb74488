"""Fetch chosen files of a dataset: stream, merge parts, verify, land atomically, retry failures.

    result = fetch(client, "71849", files, Path("data/raw/x/archives"), retries=2)

Nothing half-done is ever left where data lives: parts and merged files stay in a staging folder
(`.kocap-partial`, cleared at every start) until verified, then move into place with os.replace.
There is no resume in the protocol: a filekey that fails is fetched again as a whole.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import requests
import urllib3

from .archive import (
    CountingReader,
    Extracted,
    PartSet,
    extract_zip,
    join_volumes,
    merge_parts,
    receive_parts,
    split_volumes,
    verify_zip,
    volume_paths,
)
from .client import AIHubClient
from .errors import TransferError
from .tree import TreeFile

log = logging.getLogger(__name__)
STAGING = ".kocap-partial"


@dataclass
class FetchResult:
    landed: dict[str, Path] = field(default_factory=dict)  # filekey -> file in place
    failed: dict[str, str] = field(default_factory=dict)  # filekey -> why (after retries)
    notes: list[str] = field(default_factory=list)


def fetch(client: AIHubClient, dataset_key: str, files: list[TreeFile], out_dir: Path, retries: int = 2) -> FetchResult:
    """Download `files` into `out_dir/<tree path>`; retry failed filekeys up to `retries` times."""
    result = FetchResult()
    pending = {f.filekey: f for f in files}
    for attempt in range(retries + 1):
        if not pending:
            break
        if attempt:
            log.warning(
                "retrying %d filekey(s) (attempt %d of %d): %s",
                len(pending),
                attempt + 1,
                retries + 1,
                ", ".join(sorted(pending)),
            )
        once = fetch_once(client, dataset_key, list(pending.values()), out_dir)
        result.landed.update(once.landed)
        result.notes += once.notes
        result.failed = once.failed
        pending = {k: pending[k] for k in once.failed}
    return result


def fetch_once(client: AIHubClient, dataset_key: str, files: list[TreeFile], out_dir: Path) -> FetchResult:
    staging = out_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # leftovers of a crashed run are never data
    staging.mkdir(parents=True)
    result = FetchResult()
    try:
        sets, stream_error = _receive(client, dataset_key, [f.filekey for f in files], staging, result.notes)
        for f in files:
            try:
                result.landed[f.filekey] = _land(f, _match(f, sets), staging, out_dir, stream_error)
            except TransferError as exc:
                result.failed[f.filekey] = str(exc)
                log.warning("filekey %s (%s) failed: %s", f.filekey, f.name, exc)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _receive(client, dataset_key, filekeys, staging: Path, notes: list[str]) -> tuple[dict[str, PartSet], str | None]:
    """Stream the tar into staging; return the part sets and the stream error (None if it ended cleanly).

    After a broken stream the sets hold the parts that arrived whole; each file is then judged on
    its own (contiguity, size, zip CRCs), so files that arrived complete still land.
    """
    sets: dict[str, PartSet] = {}
    with client.download_stream(dataset_key, filekeys) as (raw, length):
        reader = CountingReader(raw)
        try:
            receive_parts(reader, staging, sets, notes)
            while reader.read(1 << 20):  # drain the tar's trailing padding
                pass
        except (TransferError, requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("download stream broke: %s", exc)
            return sets, f"transfer cut short ({type(exc).__name__})"
    if length is not None and reader.count != length:
        return sets, f"transfer cut short: {reader.count} of {length} bytes"
    return sets, None


def _match(f: TreeFile, sets: dict[str, PartSet]) -> PartSet | None:
    """The part set for a tree file: same path, or same path below the top folder."""
    if f.path in sets:
        return sets[f.path]
    tail = PurePosixPath(*PurePosixPath(f.path).parts[1:])
    for prefix, pset in sets.items():
        if PurePosixPath(*PurePosixPath(prefix).parts[1:]) == tail:
            return pset
    return None


def _land(f: TreeFile, pset: PartSet | None, staging: Path, out_dir: Path, stream_error: str | None) -> Path:
    if pset is None:
        raise TransferError(stream_error or "missing from the download (transfer cut short?)")
    merged = staging / "merged" / f.path
    size = merge_parts(pset, merged)
    low, high = f.approx_bytes()
    if not low <= size <= high:
        raise TransferError(f"merged size {size} bytes does not fit the listed size {f.display_size}")
    if f.name.lower().endswith(".zip") and not split_volumes(merged):
        verify_zip(merged)  # the last volume of a split set is verified once joined (unpack)
    elif stream_error:
        raise TransferError(f"{stream_error}; a non-zip file cannot be verified after that")
    dest = out_dir / f.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    merged.replace(dest)
    return dest


def unpack(archive: Path, dest: Path, conflicts: Path, keep_archive: bool = False) -> Extracted | None:
    """Extract a landed zip into `dest` (never overwriting), then drop the zip unless kept.

    A multi-volume set (`X.z01` ... + `X.zip`, each its own filekey, perhaps landed in different runs)
    is joined, verified and extracted when its `.zip` volume comes; a missing volume is a
    TransferError naming it. Other files (and the `.zNN` volumes themselves) are left as they are:
    returns None.
    """
    if archive.suffix.lower() != ".zip":
        return None
    volumes = split_volumes(archive)
    if not volumes:
        out = extract_zip(archive, dest, conflicts)
    else:
        staging = archive.parent / STAGING
        try:
            out = extract_zip(join_volumes(archive, staging / archive.name), dest, conflicts)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        for path in [archive, *volume_paths(archive, volumes)]:
            path.unlink()
    return out
