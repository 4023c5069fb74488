"""What a model version came from: the git commit (and whether the tree was dirty), the DVC hash of
every input and output of every stage (dvc.lock), the AI-Hub dataset key and file-tree snapshot."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from .. import paths


def git_state(root: Path) -> dict:
    def git(*args):
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit or "unknown", "git.dirty": "unknown" if status is None else str(bool(status)).lower()}


def dvc_hashes(root: Path) -> dict[str, str]:
    """path -> md5 for every dep and out in dvc.lock (folders end in .dir)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) if (root / "dvc.lock").exists() else {}
    out = {}
    for stage in (lock or {}).get("stages", {}).values():
        for item in stage.get("deps", []) + stage.get("outs", []):
            if "md5" in item:
                out[item["path"]] = item["md5"]
    return out


def aihub_snapshot(root: Path) -> dict:
    report = root / paths.INGEST_REPORT
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    return {
        "aihub.dataset_key": str(data.get("dataset_key", "unknown")),
        "aihub.snapshot_id": str(data.get("snapshot_id", "unknown")),
    }


def restore_commands(tags: dict) -> list[str]:
    return [f"git checkout {tags.get('git.commit', 'COMMIT')}", "dvc pull"]
