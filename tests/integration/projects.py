"""Scratch copies of the project for integration tests (kocap/scratch.py), with the tests' small sample
and quick training; and a way to run commands in them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kocap.scratch import BIN, scratch_project
from kocap.scratch import sh as _sh

from ..conftest import SMALL

# The tiny tower's pre-training and the data-derived generation budget are tested on their own
# (tests/unit/test_tiny_pretraining.py, test_production_path.py; the micro preset and the newcomer's demo keep
# `auto`): here 10 tower steps on 64 generated stills, not 3,000 on 4,000, and 48 new tokens, not ~350 (a quick
# model runs to the budget).
QUICK_TOWER = ["model.tiny_tower.pretrain_steps=10", "model.tiny_tower.generated_frames=64"]
QUICK_TRAINING = [
    "model.tiny_lm.pretrain_steps=5",
    *QUICK_TOWER,
    "stage1.epochs=1",
    "stage2.epochs=1",
    "stage2.checkpoint_every=5",
    "eval.max_new_tokens=48",
]
# the small sample has a handful of validation clips: the tests of registration and promotion judge on them
FEW_CLIPS = ["registry.min_clips=1"]
# METEOR, the default primary metric, needs Java; on a machine without it the lifecycle runs on ROUGE-L
PRIMARY = [] if shutil.which("java") else ["eval.primary_metric=rouge_l"]


def sh(cmd, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in a project as a user would there; a failure fails the test with its output."""
    try:
        return _sh(cmd, cwd, timeout, env)
    except RuntimeError as exc:
        raise AssertionError(str(exc)) from None


def dvc(cwd: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return sh([str(BIN / "dvc"), *args], cwd, env=env)


def make_project(root: Path, overrides: list[str] = ()) -> Path:
    small = [f"data.sample.{k}={v}" for k, v in SMALL.items()]
    return scratch_project(root, small + QUICK_TRAINING + FEW_CLIPS + PRIMARY + list(overrides), commit=True)
