"""`dvc repro` and the Prefect lifecycle flow agree: one decides, the other sees it (real Prefect
temporary server, real DVC repo and local remote, in a scratch copy of the project)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kocap.config import write_overrides

from ..conftest import REPO, SMALL

pytestmark = pytest.mark.slow
QUICK_TRAINING = ["model.tiny_lm.pretrain_steps=20", "stage1.epochs=1", "stage2.epochs=1", "stage2.checkpoint_every=5"]


def _sh(cmd, cwd, timeout=600):
    bin_dir = str(Path(sys.executable).parent)  # `dvc repro` runs `kocap stage ...` from the venv
    env = {**os.environ, "PREFECT_HOME": str(cwd / ".prefect"), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _kocap(cwd, *args):
    proc = _sh([sys.executable, "-m", "kocap.cli", "run", *args], cwd)
    summary = json.loads(proc.stdout[proc.stdout.index("{"): proc.stdout.rindex("}") + 1])
    return summary, proc.stdout + proc.stderr


def _dvc(cwd, *args):
    return _sh([str(Path(sys.executable).parent / "dvc"), *args], cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for name in ("kocap", "tasks", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    _sh(["git", "init", "-q"], root)
    _dvc(root, "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    write_overrides(root / "params.yaml", [f"data.sample.{k}={v}" for k, v in SMALL.items()] + QUICK_TRAINING)
    return root


def test_flow_then_dvc_agree(project):
    summary, _ = _kocap(project)
    assert summary["ingest"]["ran"] is True and summary["pushed_files"] > 0
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}
    assert "didn't change" in _dvc(project, "repro").stdout
    assert any((project / ".dvc-remote").rglob("*")), "outputs reached the local DVC remote"


def test_dvc_repro_then_flow_finds_everything_up_to_date(project):
    write_overrides(project / "params.yaml", ["data.sample.num_clips=32"])
    assert "Running stage 'ingest'" in _dvc(project, "repro").stdout
    summary, _ = _kocap(project)
    assert summary["ingest"]["ran"] is False          # DVC says up to date: skipped without running
    summary, logs = _kocap(project)
    assert "Cached" in logs and summary["ingest"]["ran"] is False
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}


def test_overrides_on_the_command_line_are_recorded_for_dvc(project):
    summary, _ = _kocap(project, "data.sample.num_clips=40")
    assert summary["ingest"]["ran"] is True
    assert summary["ingest"]["result"]["downloaded"] and len(summary["ingest"]["result"]["downloaded"]) < 8
    assert "num_clips: 40" in (project / "params.yaml").read_text(encoding="utf-8")
    assert "num_clips: 40" in (project / "dvc.lock").read_text(encoding="utf-8")
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}


def test_outputs_restore_from_the_remote(project):
    shutil.rmtree(project / "data" / "raw")
    shutil.rmtree(project / ".dvc" / "cache")
    _dvc(project, "pull")
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}


def test_the_key_can_come_from_a_prefect_secret_block(tmp_path):
    from prefect.blocks.system import Secret
    from prefect.testing.utilities import prefect_test_harness

    from kocap.stages import RunEnv

    with prefect_test_harness(server_startup_timeout=120):
        Secret(value="block-key-551").save("aihub-apikey", overwrite=True)
        assert RunEnv({}).aihub_key().reveal() == "block-key-551"
        assert RunEnv({"AIHUB_APIKEY": "env-wins"}).aihub_key().reveal() == "env-wins"
