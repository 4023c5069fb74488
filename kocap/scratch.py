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
from .ui import servers

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


def newcomer_clone(dest: Path) -> Path:
    """What `git clone` of this tree gives a newcomer: the files git tracks (as they are in the working
    tree, so an uncommitted fix is tested too), nothing ignored or untracked, committed in a fresh repo."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (REPO / name).is_file():  # deleted in the working tree: not in the next commit either
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    sh(["git", "init", "-q"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "-c", "user.email=new@kocap", "-c", "user.name=newcomer", "commit", "-qm", "clone"], dest)
    return dest


def make_recipe(target: str) -> list[str]:
    """The shell lines of a Makefile target, with $(BIN) as this interpreter's bin folder."""
    lines = (REPO / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:].lstrip("@").replace("$(BIN)", str(BIN)))
    return recipe


# A Prefect API for every scratch command, where a test session runs one server for all of them: each
# `kocap run` otherwise starts, migrates and stops a temporary server of its own (a small lifecycle run,
# 95 s -> 65 s wall, 2026-12-06).
SHARED_PREFECT = "KOCAP_SCRATCH_PREFECT_API_URL"


def sh(cmd, cwd: Path, timeout: float | None = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in a project as a user would there (the environment of `project_env`); a failure
    raises with the end of its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=project_env(cwd, env), capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def project_env(cwd: Path, env: dict | None = None) -> dict:
    """A command's environment in a project: its own PREFECT_HOME and MLflow DB unless given (None in `env`
    removes a variable). Flow runs go to the server named by SHARED_PREFECT when one is, else to each
    command's own temporary server."""
    full = {
        **os.environ,
        "PREFECT_HOME": str(cwd / ".prefect"),
        "PATH": str(BIN) + os.pathsep + os.environ["PATH"],
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
    }
    full.pop("PREFECT_API_URL", None)
    shared = os.environ.get(SHARED_PREFECT)
    if shared and not servers(cwd):  # the project's own `make ui` servers win, as they do for a user
        full["PREFECT_API_URL"] = shared
    full.update(env or {})
    return {k: v for k, v in full.items() if v is not None}
