"""Lineage comes from the producer: the hash a version records for a path is the one the stage that
writes it recorded, never a consumer's stale deps entry. The repository commits no run's results."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from kocap import pipeline
from kocap.model.sources import ensure_sources
from kocap.registry.lineage import dvc_hashes

from ..conftest import REPO


def _lock(root: Path, stages: dict) -> None:
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}), encoding="utf-8")


def test_a_consumers_stale_deps_never_override_the_producers_outs(tmp_path):
    # register runs last and its entry is rewritten only after it ran: at register time its deps still
    # name the previous run's base and adapter
    _lock(
        tmp_path,
        {
            "assemble": {
                "deps": [{"path": "kocap/model", "md5": "code1.dir"}],
                "outs": [{"path": "models/base", "md5": "new-base.dir"}],
            },
            "finetune": {
                "deps": [{"path": "models/base", "md5": "new-base.dir"}],
                "outs": [{"path": "models/finetune", "md5": "new-ft.dir"}],
            },
            "register": {
                "deps": [
                    {"path": "models/base", "md5": "old-base.dir"},
                    {"path": "models/finetune", "md5": "old-ft.dir"},
                ],
                "outs": [],
            },
        },
    )
    hashes = dvc_hashes(tmp_path)
    assert hashes["models/base"] == "new-base.dir" and hashes["models/finetune"] == "new-ft.dir"
    assert hashes["kocap/model"] == "code1.dir"  # a path no stage produces keeps its deps hash
    assert dvc_hashes(tmp_path / "nowhere") == {}


def test_the_repository_commits_no_results_of_a_run():
    """dvc.lock and the stages' metrics and plots belong to a user's own run, not to the template: a
    committed dvc.lock from an old run names outputs no cache or remote of a fresh clone holds."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    if not tracked:
        return  # not a git checkout (an sdist): nothing is committed
    results = {"dvc.lock"} | {p for s in pipeline.STAGES for p in (*s.outs, *s.metrics, *s.plots)}
    committed = [t for t in tracked if t in results or any(t.startswith(r + "/") for r in results)]
    assert not committed, f"run results committed to the repository: {committed}"


def test_the_micro_presets_folders_are_built_when_missing(tmp_path):
    from kocap.config import load_config

    preset = load_config(REPO / "params.yaml", ["model.preset=micro"]).model.chosen
    ensure_sources(tmp_path, preset, offline=True)
    assert (tmp_path / preset.vision / "config.json").exists() and (tmp_path / preset.llm / "tokenizer.json").exists()
