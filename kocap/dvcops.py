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
