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
    """path -> md5 (folders end in .dir) for every path in dvc.lock, each taken from the stage that
    produces it (its `outs`). A consumer's `deps` entry is only rewritten after that consumer has run,
    so at register time register's own deps still hold the previous run's hashes: never let them win.
    Deps are used only for paths no stage produces (code, for instance)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) if (root / "dvc.lock").exists() else {}
    stages = (lock or {}).get("stages", {}).values()
    produced = {o["path"]: o["md5"] for stage in stages for o in stage.get("outs", []) if "md5" in o}
    consumed = {d["path"]: d["md5"] for stage in stages for d in stage.get("deps", []) if "md5" in d}
    return {**consumed, **produced}


def aihub_snapshot(root: Path) -> dict:
    report = root / paths.INGEST_REPORT
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    return {
        "aihub.dataset_key": str(data.get("dataset_key", "unknown")),
        "aihub.snapshot_id": str(data.get("snapshot_id", "unknown")),
        "aihub.lost_share": str(data.get("lost_share", "unknown")),  # of the selected tree, not landed
        "aihub.missing_filekeys": ",".join(data.get("missing", []))[:4000],
    }


def lost_data(root: Path) -> dict:
    """What of the dataset had not landed when this model's data was ingested (reports/ingest.json)."""
    report = root / paths.INGEST_REPORT
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    return {"share": float(data.get("lost_share") or 0.0), "filekeys": list(data.get("missing", []))}


def restore_commands(tags: dict) -> list[str]:
    return [f"git checkout {tags.get('git.commit', 'COMMIT')}", "dvc pull"]
