"""A scratch copy of this project to run the lifecycle in: the code, the stage table (dvc.yaml),
params.yaml, a git repo and a DVC repo with the project's remote config. What the integration tests
and the benchmarks run in, so neither touches the working project.

    project = scratch_project(Path(tmp), ["data.sample.num_clips=48"])
    sh([sys.executable, "-m", "kocap.cli", "run"], project)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .config import write_overrides

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def scratch_project(root: Path, overrides: list[str] = (), commit: bool = False) -> Path:
    """Copy the project's code and config into `root`, make it a git + DVC repo, apply `overrides`;
    with `commit`, commit it all (a clean git state, as a user's checkout)."""
    for name in ("kocap", "tasks", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    sh(["git", "init", "-q"], root)
    sh([str(BIN / "dvc"), "init", "-q"], root)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    if overrides:
        write_overrides(root / "params.yaml", list(overrides))
    if commit:
        sh(["git", "add", "-A"], root)
        sh(["git", "-c", "user.email=test@kocap", "-c", "user.name=test", "commit", "-qm", "project"], root)
    return root


def sh(cmd, cwd: Path, timeout: float | None = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in a project as a user would there (its own PREFECT_HOME and MLflow DB unless given;
    None in `env` removes a variable); a failure raises with the end of its output."""
    full = {
        **os.environ,
        "PREFECT_HOME": str(cwd / ".prefect"),
        "PATH": str(BIN) + os.pathsep + os.environ["PATH"],
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
    }
    full.pop("PREFECT_API_URL", None)
    full.update(env or {})
    full = {k: v for k, v in full.items() if v is not None}
    proc = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
