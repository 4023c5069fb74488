"""Scratch copies of the project for integration tests: code, dvc.yaml, params.yaml, a git repo, a
DVC repo with the project's remote config; and a way to run commands in them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from kocap.config import write_overrides

from ..conftest import REPO, SMALL

QUICK_TRAINING = ["model.tiny_lm.pretrain_steps=20", "stage1.epochs=1", "stage2.epochs=1", "stage2.checkpoint_every=5"]
# METEOR, the default primary metric, needs Java; on a machine without it the lifecycle runs on ROUGE-L
PRIMARY = [] if shutil.which("java") else ["eval.primary_metric=rouge_l"]
BIN = Path(sys.executable).parent


def sh(cmd, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in a project as a user would there (its own PREFECT_HOME and MLflow DB unless given)."""
    full = {**os.environ, "PREFECT_HOME": str(cwd / ".prefect"), "PATH": str(BIN) + os.pathsep + os.environ["PATH"],
            "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    full.pop("PREFECT_API_URL", None)
    full.update(env or {})
    full = {k: v for k, v in full.items() if v is not None}  # None in `env` removes a variable
    proc = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def dvc(cwd: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return sh([str(BIN / "dvc"), *args], cwd, env=env)


def make_project(root: Path, overrides: list[str] = ()) -> Path:
    for name in ("kocap", "tasks", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    sh(["git", "init", "-q"], root)
    dvc(root, "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    write_overrides(root / "params.yaml",
                    [f"data.sample.{k}={v}" for k, v in SMALL.items()] + QUICK_TRAINING + PRIMARY + list(overrides))
    sh(["git", "add", "-A"], root)
    sh(["git", "-c", "user.email=test@kocap", "-c", "user.name=test", "commit", "-qm", "project"], root)
    return root
