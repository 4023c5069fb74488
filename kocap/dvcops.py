"""DVC is the one owner of "is this stage up to date": content hashes of deps, params and outs.

The Prefect tasks ask it before running (and key their cache on its lock entry), and commit
through it after running, so a flow run leaves exactly what `dvc repro` would have left.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml


def _repo(root: Path):
    from dvc.repo import Repo

    return Repo(str(root))


def changed(root: Path, name: str) -> bool:
    """True when the stage's deps, params or outs differ from its dvc.lock entry (or it has none)."""
    with _repo(root) as repo:
        return bool(repo.status(targets=[name]))


def lock_entry(root: Path, name: str) -> dict | None:
    lock = root / "dvc.lock"
    if not lock.exists():
        return None
    return (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {}).get(name)


def up_to_date_key(root: Path, name: str) -> str | None:
    """A cache key for an up-to-date stage (the hash of its lock entry); None when it must run."""
    entry = lock_entry(root, name)
    if entry is None or changed(root, name):
        return None
    blob = json.dumps({"stage": name, "lock": entry}, sort_keys=True, ensure_ascii=False)
    return f"dvc-{name}-" + hashlib.sha256(blob.encode()).hexdigest()[:32]


def commit(root: Path, name: str) -> None:
    """Record the stage's outputs in the DVC cache and dvc.lock, as `dvc repro` does after running."""
    with _repo(root) as repo:
        repo.commit(name, force=True)


def push(root: Path, targets: list[str] | None = None) -> int:
    """Push tracked outputs (all, or those of `targets`) to the default remote; returns how many went up."""
    with _repo(root) as repo:
        return repo.push(targets=targets)


def _uncached(root: Path) -> set[str]:
    """Outputs dvc.yaml keeps out of the cache (metrics and plots live in git)."""
    stages = (yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages", {})
    return {
        path
        for s in stages.values()
        for kind in ("metrics", "plots", "outs")
        for item in s.get(kind, [])
        if isinstance(item, dict)
        for path, opts in item.items()
        if (opts or {}).get("cache") is False
    }


def recorded_objects(root: Path, paths: list[str] | None = None, remote=None) -> set[str]:
    """Every object the outputs in dvc.lock (all, or those at `paths`) need on a remote: single files,
    `.dir` listings and each file a listing names (read from the local cache, else from `remote`)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) if (root / "dvc.lock").exists() else None
    outs = [o for e in ((lock or {}).get("stages") or {}).values() for o in e.get("outs", [])]
    hashes = {
        o["md5"]
        for o in outs
        if "md5" in o and o["path"] not in _uncached(root) and (paths is None or o["path"] in paths)
    }
    cache = cache_dir(root)
    for h in [h for h in hashes if h.endswith(".dir")]:
        listing = _listing(cache, remote, h)
        hashes |= {item["md5"] for item in listing or []}
    return hashes


def _listing(cache: Path, remote, h: str) -> list | None:
    local = cache_object(cache, h)
    if local.exists():
        return json.loads(local.read_text(encoding="utf-8"))
    if remote is not None and remote.exists(h):  # this machine never had it (a fresh clone, a cleaned cache)
        return json.loads(remote.fs.cat_file(remote.oid_to_path(h)))
    return None


def cache_dir(root: Path) -> Path:
    """The project's DVC cache folder (objects by md5)."""
    with _repo(root) as repo:
        return Path(repo.cache.local.path)


def cache_object(cache: Path, h: str) -> Path:
    """Where DVC keeps the object with md5 `h` (a file, or a folder's `.dir` listing) in `cache`."""
    return cache / h[:2] / h[2:]


def missing_on_remote(root: Path, paths: list[str] | None = None) -> list[str]:
    """Objects recorded in dvc.lock that the default remote does not hold whole, checked object by object
    (DVC itself trusts a `.dir` listing on the remote to mean all its files are there): each must exist,
    and be as long as this machine's cached copy where it has one (a cut-off upload is not an object)."""
    with _repo(root) as repo:
        remote, cache = repo.cloud.get_remote_odb(), Path(repo.cache.local.path)
        wanted = recorded_objects(root, paths, remote)
        present = set(remote.oids_exist(sorted(wanted)))
        short = {
            h
            for h in present
            if cache_object(cache, h).exists() and _remote_size(remote, h) != cache_object(cache, h).stat().st_size
        }
    return sorted((wanted - present) | short)


def _remote_size(remote, h: str) -> int | None:
    try:
        return remote.fs.size(remote.oid_to_path(h))
    except OSError:
        return None


def verify_remote(root: Path, paths: list[str] | None = None) -> tuple[int, list[str]]:
    """Push again whatever the remote lacks or holds cut short (from the local cache); returns
    (re-pushed, still missing)."""
    from dvc_data.hashfile.hash_info import HashInfo

    missing = missing_on_remote(root, paths)
    if missing:
        with _repo(root) as repo:  # no remote index: DVC's own (stale after a killed push) would skip them again
            cache, remote = repo.cache.local, repo.cloud.get_remote_odb()
            for h in missing:  # a cut-off copy "exists": DVC would skip it
                if remote.exists(h):
                    remote.fs.rm(remote.oid_to_path(h))
            repo.cloud.transfer(cache, remote, [HashInfo("md5", h) for h in missing], cache_odb=cache)
    return len(missing), missing_on_remote(root, paths) if missing else []


def pull(root: Path, targets: list[str]) -> None:
    """Fetch outputs from the default remote and check them out, as recorded in dvc.lock."""
    with _repo(root) as repo:
        repo.pull(targets=targets, force=True)


def merge_lock(root: Path, entries: dict[str, dict]) -> None:
    """Write stage entries (as another workspace recorded them) into this workspace's dvc.lock."""
    path = root / "dvc.lock"
    lock = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    lock = lock or {"schema": "2.0", "stages": {}}
    lock.setdefault("stages", {}).update(entries)
    path.write_text(yaml.safe_dump(lock, sort_keys=False, allow_unicode=True), encoding="utf-8")
