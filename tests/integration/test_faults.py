"""Kills at the worst moments, caused on purpose (failpoints, `kocap.faults`), and what a rerun must
leave: one registry version per registration, complete, with its lineage; no orphaned MLflow runs or
temporary Prefect servers; a gate that compares on the same clips and does not move with the seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from .projects import dvc, make_project, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("faults"))


def _kocap(project: Path, *args: str, fault: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PREFECT_HOME": str(project / ".prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "KOCAP_FAULT": fault or "",
    }
    env.pop("PREFECT_API_URL", None)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # files, not pipes: a killed run's orphaned server would hold a pipe open, and a read would never end
        code = subprocess.run(
            [sys.executable, "-m", "kocap.cli", *args], cwd=project, env=env, stdout=out, stderr=err, timeout=1500
        ).returncode
        out.seek(0)
        err.seek(0)
        proc = subprocess.CompletedProcess(args, code, out.read(), err.read())
    if fault:
        assert proc.returncode == -signal.SIGKILL, f"expected the kill at {fault}:\n{proc.stderr[-3000:]}"
    elif ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _client(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _versions(project: Path) -> list:
    return sorted(_client(project).search_model_versions("name='kocap'"), key=lambda v: int(v.version))


def _servers(project: Path) -> list[int]:
    """Live temporary Prefect servers of this project."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"PREFECT__SERVER_EPHEMERAL=1" in environ and f"PREFECT_HOME={project / '.prefect'}\0".encode() in environ:
            found.append(int(proc.name))
    return found


def test_a_kill_right_after_the_version_is_created_is_completed_not_duplicated(project):
    _kocap(project, "run", fault="register.created")
    (version,) = _versions(project)
    assert version.tags["kocap.state"] == "incomplete" and "kocap.decision" not in version.tags
    lineage = _kocap(project, "lineage", "models:/kocap/1", ok=False)
    assert lineage.returncode == 2 and "incomplete" in lineage.stderr and "Traceback" not in lineage.stderr
    promote = _kocap(project, "promote", "1", "--force", "--reason", "by hand", ok=False)
    assert promote.returncode == 2 and "incomplete" in promote.stderr
    assert _client(project).get_model_version("kocap", "1").tags.get("kocap.manual_override") is None
    assert _servers(project), "the killed run's temporary Prefect server is still up (before the next run reaps it)"

    _kocap(project, "run")
    (version,) = _versions(project)  # the same version, now complete
    tags = version.tags
    assert tags["kocap.state"] == "complete" and tags["kocap.decision"] in ("champion", "challenger")
    assert (
        tags["run_id"]
        and tags["base.md5"]
        and str(_client(project).get_model_version_by_alias("kocap", "challenger").version) == "1"
    )
    assert "git checkout" in _kocap(project, "lineage", "models:/kocap/1").stdout
    assert _servers(project) == [], "the orphaned temporary server was reaped (and this run's own stopped)"


def test_kills_inside_a_run_and_before_the_dvc_commit_leave_no_orphan_and_no_duplicate(project):
    if _versions(project)[0].tags["kocap.decision"] != "champion":
        _kocap(project, "promote", "1", "--force", "--reason", "a champion to compare against")
    before = pd.read_parquet(project / "reports/predictions.parquet")
    _kocap(project, "run", "eval.seed=5", fault="in-run:evaluate")  # killed with evaluate's MLflow run open
    orphans = _client(project).search_runs([_experiment(project)], "attributes.status = 'RUNNING'")
    assert len(orphans) == 1 and orphans[0].data.tags["kocap.stage"] == "evaluate"

    # a registry param changes, so register runs; it wrote its report when killed, and DVC never committed it
    _kocap(project, "run", "registry.min_unique_share=0.4", fault="after-stage:register")
    assert _client(project).get_run(orphans[0].info.run_id).info.status == "KILLED"
    assert len(_versions(project)) == 2
    _kocap(project, "run")
    versions = _versions(project)
    assert len(versions) == 2, "the rerun completed version 2 instead of registering a third"
    assert json.loads(dvc(project, "status", "--json").stdout) == {}
    assert json.loads((project / "reports/register.json").read_text())["version"] == 2

    # the gate under another seed: deterministic decoding gives the same captions, so no promotion on noise
    after = pd.read_parquet(project / "reports/predictions.parquet")
    assert after["prediction"].tolist() == before["prediction"].tolist()
    tags = versions[1].tags
    assert tags["kocap.decision"] == "challenger" and tags["gate.champion_version"] == "1"
    assert tags["gate.champion"] == tags["gate.challenger"] and float(tags["gate.lower95"]) == 0.0
    assert int(tags["gate.clips"]) == len(after) and "same" in tags["kocap.reasons"]
    assert any((project / ".kocap-cache/champion").iterdir())  # the champion re-captioned the current clips once


def test_objects_missing_from_the_remote_are_pushed_again(project, tmp_path):
    """What a killed `dvc push` leaves: objects missing on the remote while DVC's remote index says they
    are there (`dvc push` then reports nothing to do). The flow checks the remote object by object."""
    from kocap import dvcops

    lost = sorted(h for h in dvcops.recorded_objects(project, ["models/finetune"]) if not h.endswith(".dir"))[:6]
    for h in lost:  # files of a folder output whose listing (.dir) is still on the remote
        (project / ".dvc-remote/files/md5" / h[:2] / h[2:]).unlink()
    dvc(project, "push")
    assert dvcops.missing_on_remote(project) == lost  # DVC trusts the listing: its push leaves the holes
    _kocap(project, "run")
    assert dvcops.missing_on_remote(project) == []
    clone = tmp_path / "clone"  # another machine: everything recorded can be pulled
    sh(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    for name in ("dvc.lock", "params.yaml"):
        (clone / name).write_bytes((project / name).read_bytes())
    dvc(clone, "remote", "modify", "--local", "local", "url", str(project / ".dvc-remote"))
    dvc(clone, "pull", "models/finetune", "reports/predictions.parquet")
    assert (clone / "reports/predictions.parquet").read_bytes() == (
        project / "reports/predictions.parquet"
    ).read_bytes()


def test_a_terminated_run_stops_the_temporary_prefect_server_it_started(project):
    """`kill PID` (SIGTERM) of a running `kocap run`: it exits (143) and takes its temporary Prefect
    server and the workspace lock with it; before, the server stayed up until a later run reaped it."""
    import time

    from kocap.workspace import exclusive

    env = {
        **os.environ,
        "PREFECT_HOME": str(project / ".prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }
    env.pop("PREFECT_API_URL", None)
    assert _servers(project) == []
    proc = subprocess.Popen(
        [sys.executable, "-m", "kocap.cli", "run", "eval.seed=11"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not _servers(project) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert _servers(project), "the run never started its temporary server"
    time.sleep(3)  # inside the flow now
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    deadline = time.time() + 30
    while _servers(project) and time.time() < deadline:
        time.sleep(0.5)
    assert _servers(project) == [], "the terminated run left its temporary Prefect server running"
    with exclusive(project):  # released: the next run is not refused
        pass


def _experiment(project: Path) -> str:
    return _client(project).get_experiment_by_name("kocap").experiment_id


def test_a_pasted_key_with_a_line_break_is_refused_and_stored_nowhere(tmp_path, sample_server_root):
    from kocap.aihub.emulator import Emulator

    project = make_project(tmp_path / "p", ["data.source=aihub"])
    with Emulator(sample_server_root, {"MARKER"}, part_size=4096) as emu:
        env = {"AIHUB_APIKEY": "MARKER\nX", "AIHUB_BASE_URL": emu.url}
        flow = sh_fail(project, env, "run")  # refused before Prefect starts
        stage = sh_fail(project, env, "stage", "ingest")  # the stage itself (dvc repro's path)
    for proc in (flow, stage):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "on one line" in proc.stderr
        assert "MARKER" not in proc.stdout + proc.stderr
    assert not (project / ".prefect").exists()
    stored = [p for p in project.rglob("*") if p.is_file() and b"MARKER" in p.read_bytes()]
    assert stored == [], f"the key reached {stored}"


def sh_fail(project: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    full = {
        **os.environ,
        "PREFECT_HOME": str(project / ".prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        **env,
    }
    full.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "kocap.cli", *args], cwd=project, env=full, capture_output=True, text=True, timeout=600
    )
