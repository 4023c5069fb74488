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


def test_the_remote_check_reads_listings_from_the_remote_and_compares_sizes(tmp_path):
    """After `dvc push` the flow checks the remote object by object. It skipped a folder whose `.dir`
    listing this machine's cache lacks (a fresh clone, a cleaned cache) and took a cut-off upload for an
    object: now the listing is read from the remote, a shorter copy counts as missing and is re-pushed."""
    import subprocess
    import sys

    from kocap import dvcops

    repo, remote = tmp_path / "repo", tmp_path / "remote"
    (repo / "out").mkdir(parents=True)
    for i in range(3):
        (repo / "out" / f"{i}.bin").write_bytes(bytes([i]) * (1000 + i))
    (repo / "dvc.yaml").write_text("stages:\n  make:\n    cmd: 'true'\n    outs: [out]\n", encoding="utf-8")
    for cmd in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(remote)],
        [sys.executable, "-m", "dvc", "commit", "-f", "-q", "make"],
        [sys.executable, "-m", "dvc", "push", "-q"],
    ):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    assert dvcops.missing_on_remote(repo) == []
    objects = remote / "files" / "md5"
    files = sorted(h for h in dvcops.recorded_objects(repo) if not h.endswith(".dir"))
    (listing_hash,) = [h for h in dvcops.recorded_objects(repo) if h.endswith(".dir")]
    cut = objects / files[0][:2] / files[0][2:]
    cut.write_bytes(cut.read_bytes()[:10])  # a cut-off upload: it "exists"
    assert dvcops.missing_on_remote(repo) == [files[0]]
    assert dvcops.verify_remote(repo) == (1, []) and cut.stat().st_size > 10  # pushed again, whole
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    (cache / listing_hash[:2] / listing_hash[2:]).unlink()  # this machine lacks the listing ...
    (objects / files[1][:2] / files[1][2:]).unlink()  # ... and the remote one of the files it names
    assert dvcops.missing_on_remote(repo) == [files[1]]
