"""Errors a user can act on are one clear line (exit 2, no traceback), and the AI-Hub key never shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kocap.aihub.client import AIHubClient, ApiKey
from kocap.aihub.errors import MalformedKeyError, UnreachableError

from ..conftest import REPO


@pytest.mark.parametrize("pasted", ["MARKER\nX", "MARKER X", "MARKER\tX", "MARKER\x00X", "MARKER\u200bX"])
def test_a_key_with_characters_no_key_has_is_refused_without_echoing_it(pasted):
    with pytest.raises(MalformedKeyError) as refused:
        ApiKey(pasted)
    assert "MARKER" not in str(refused.value) and "one line" in str(refused.value)
    assert ApiKey("  k-123_ABC.x \n").reveal() == "k-123_ABC.x"  # surrounding whitespace is only trimmed


def test_an_unreachable_server_names_the_server_and_what_to_check():
    with pytest.raises(UnreachableError, match=r"127\.0\.0\.1:9 .*check AIHUB_BASE_URL"):
        AIHubClient("http://127.0.0.1:9", timeout_s=5).tree("71849")


def _kocap(cwd: Path, *args: str, params: str | None = None) -> subprocess.CompletedProcess:
    if params is not None:
        (cwd / "params.yaml").write_text(params, encoding="utf-8")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
        "PREFECT_HOME": str(cwd / ".prefect"),
        "AIHUB_BASE_URL": "http://127.0.0.1:9",
        "HF_HOME": str(cwd / "hf"),  # an empty Hugging Face cache
    }
    return subprocess.run(
        [sys.executable, "-m", "kocap.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args, params, says",
    [
        (["run"], "data:\n  source: [sample\n", "not valid YAML"),
        (["run", "stage2.batch_size=0"], None, "stage2.batch_size"),
        (["promote", "99", "--force", "--reason", "x"], None, "not found"),
        (["lineage", "models:/nosuch@champion"], None, "MLflow"),
        (["caption", "a.mp4", "--model", "models:/kocap/99"], None, "MLflow"),
        (["aihub", "tree", "71849"], None, "could not reach the AI-Hub server http://127.0.0.1:9"),
        (["run", "model.preset=qwen3-8b"], None, "`hf download openai/clip-vit-large-patch14-336`"),
    ],
)
def test_user_errors_are_one_line_without_a_traceback(tmp_path, args, params, says):
    if params is None:
        (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    before = (tmp_path / "params.yaml").read_text(encoding="utf-8") if params is None else params
    proc = _kocap(tmp_path, *args, params=params)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and says in proc.stderr, proc.stderr[-2000:]
    assert (tmp_path / "params.yaml").read_text(encoding="utf-8") == before  # nothing written
    assert not (tmp_path / ".prefect").exists() or args[0] != "run"  # refused before Prefect started


def test_meteor_without_java_stops_before_captioning_with_what_to_do(tmp_path, monkeypatch):
    from kocap.cli import user_error
    from kocap.evaluate.metrics import MetricUnavailable, require

    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without a JRE on its PATH
    with pytest.raises(MetricUnavailable) as refused:
        require("meteor")
    assert "Java" in user_error(refused.value) and "eval.primary_metric=rouge_l" in user_error(refused.value)
    require("rouge_l")  # pure Python: fine without Java
