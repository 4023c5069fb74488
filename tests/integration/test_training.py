"""Training for real on the embedded sample: stage 2 and the preference stage resume after kill -9 and end like
an unbroken run. (That training teaches the model to see is tested on the newcomer's `make demo`: test_newcomer.)"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kocap import paths
from kocap.config import load_config
from kocap.data import frames, ingest, validate
from kocap.data.rows import split_rows
from kocap.env import RunEnv
from kocap.train import align, assemble, finetune, prefer

from ..conftest import SMALL
from .projects import QUICK_TOWER

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


# the tests' small sample (24 clips) and a tower pre-trained 10 steps, not 3,000 (its own test is in
# tests/unit/test_tiny_pretraining.py): resuming is about the loop's state, not about how much there is to learn
SMALL_SAMPLE = [f"data.sample.{k}={v}" for k, v in SMALL.items()]
SMALL_SAMPLE += QUICK_TOWER


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """ingest -> validate -> frames -> assemble on the small embedded sample."""
    root = tmp_path_factory.mktemp("train")
    cfg = load_config(REPO / "params.yaml", SMALL_SAMPLE)
    for stage in (ingest, validate, frames, assemble):
        stage.run(cfg, root, RunEnv({}))
    return root


def _copy(prepared, tmp_path) -> Path:
    root = tmp_path / "p"
    shutil.copytree(prepared, root)
    return root


def _kill_at_checkpoint(stage: str, overrides: list, root: Path, checkpoints: Path, step: int) -> None:
    """Run a training stage in a child process and kill -9 it once checkpoint `step` is on disk. The child
    uses this process's torch thread count: another count sums in another order, and the resumed run's
    weights then drift from the unbroken one's by more than rounding (seen in CI)."""
    script = (
        f"import sys, torch; torch.set_num_threads({torch.get_num_threads()}); from pathlib import Path; "
        "from kocap.config import load_config; from kocap.train import "
        f"{stage}; {stage}.run(load_config(Path('{REPO}/params.yaml'), {overrides!r}), Path(sys.argv[1]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(root)], env=os.environ.copy())
    deadline = time.time() + 300
    while time.time() < deadline and not list(checkpoints.glob(f"step-{step:07d}")) and proc.poll() is None:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _last_trainable(checkpoints: Path) -> dict:
    return torch.load(sorted(checkpoints.glob("step-*"))[-1] / "state.pt", weights_only=False)["trainable"]


def test_finetune_resumes_after_kill_and_ends_like_an_unbroken_run(prepared, tmp_path):
    overrides = SMALL_SAMPLE + ["stage2.epochs=4", "stage2.checkpoint_every=4"]
    killed, clean = _copy(prepared, tmp_path / "a"), _copy(prepared, tmp_path / "b")
    checkpoints = killed / paths.FINETUNE / "checkpoints"
    _kill_at_checkpoint("finetune", overrides, killed, checkpoints, 8)
    assert not (killed / paths.FINETUNE_REPORT).exists(), "killed before the end"
    cfg = load_config(REPO / "params.yaml", overrides)
    resumed = finetune.run(cfg, killed)
    unbroken = finetune.run(cfg, clean)
    per_epoch = -(-len(split_rows(killed)) // cfg.stage2.batch_size)
    assert resumed["steps"] == unbroken["steps"] == 4 * per_epoch > 8
    a, b = _last_trainable(checkpoints), _last_trainable(clean / paths.FINETUNE / "checkpoints")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_the_preference_stage_resumes_after_kill_and_ends_like_an_unbroken_run(prepared, tmp_path):
    stage2 = SMALL_SAMPLE + ["stage2.epochs=4"]
    dpo = ["prefer.enabled=true", "prefer.max_clips=12", "prefer.candidates=3", "prefer.batch_size=2"]
    dpo += ["prefer.epochs=3", "prefer.checkpoint_every=2", "prefer.video_weight=1.0"]  # the video term resumes too
    trained = _copy(prepared, tmp_path / "s2")
    align.run(load_config(REPO / "params.yaml", stage2), trained)
    finetune.run(load_config(REPO / "params.yaml", stage2), trained)
    killed, clean = _copy(trained, tmp_path / "a"), _copy(trained, tmp_path / "b")
    checkpoints = killed / paths.PREFER / "checkpoints"
    _kill_at_checkpoint("prefer", stage2 + dpo, killed, checkpoints, 4)
    assert list(checkpoints.glob("step-0000004")), "the run was killed after its fourth step"
    assert not (killed / paths.PREFER_REPORT).exists(), "killed before the end"
    cfg = load_config(REPO / "params.yaml", stage2 + dpo)
    resumed, unbroken = prefer.run(cfg, killed), prefer.run(cfg, clean)
    assert resumed["resumed_from"] >= 4 and unbroken["resumed_from"] == 0
    assert resumed["steps"] == unbroken["steps"] > 4
    for figure in ("heldout_preference_accuracy_after", "heldout_own_video_preferred"):
        assert resumed[figure] == unbroken[figure]
    a, b = _last_trainable(checkpoints), _last_trainable(clean / paths.PREFER / "checkpoints")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
