"""kocap as a service, end to end with real servers: `kocap ui start` (Prefect server + MLflow server),
`kocap deploy`, process workers, the watch-aihub deployment against the loopback AI-Hub emulator, the
event trigger that retrains, and stage 2 on a second work pool in its own working folder that shares
nothing with the lifecycle but a DVC remote and MLflow, surviving a killed worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import psutil
import pytest

from kocap import paths
from kocap.aihub.emulator import Emulator
from kocap.config import SampleParams
from kocap.sample.build import build_aihub_sample

from ..conftest import SMALL
from .projects import BIN, dvc, make_project, sh

pytestmark = pytest.mark.slow
KEY = "ops-test-key-7731"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, body: dict | None = None):
    req = urllib.request.Request(
        url, json.dumps(body).encode() if body is not None else None, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


class Servers:
    def __init__(self, prefect_url: str, mlflow_url: str):
        self.prefect, self.mlflow = prefect_url, mlflow_url

    def flow_runs(self, flow: str) -> list[dict]:
        runs = _api(f"{self.prefect}/api/flow_runs/filter", {"flows": {"name": {"any_": [flow]}}})
        return sorted(runs, key=lambda r: r["created"])

    def versions(self) -> list[dict]:
        found = _api(f"{self.mlflow}/api/2.0/mlflow/model-versions/search?filter=name%3D%27kocap%27")
        return sorted(found.get("model_versions", []), key=lambda v: int(v["version"]))

    def wait_versions(self, n: int, timeout: float = 900) -> list[dict]:
        """Wait for model version n and a finished lifecycle run for it (tags are set before it ends)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            bad = [
                r
                for f in ("lifecycle", "watch-aihub")
                for r in self.flow_runs(f)
                if r["state_type"] in ("FAILED", "CRASHED")
            ]
            assert not bad, f"flow run ended {bad[0]['state_type']}: {bad[0]['state']['message']}"
            done = [r for r in self.flow_runs("lifecycle") if r["state_type"] == "COMPLETED"]
            if len(self.versions()) >= n and len(done) >= n:
                return self.versions()
            time.sleep(3)
        raise AssertionError(f"no model version {n} within {timeout} s")


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ops")
    served = tmp / "aihub"
    build_aihub_sample(served, SampleParams(**SMALL))
    project = make_project(tmp / "project", ["data.source=aihub"])
    remote = tmp / "shared-dvc-remote"
    dvc(project, "remote", "modify", "--local", "local", "url", str(remote))
    ports = _free_port(), _free_port()
    sh(
        [
            sys.executable,
            "-m",
            "kocap.cli",
            "ui",
            "start",
            "--prefect-port",
            str(ports[0]),
            "--mlflow-port",
            str(ports[1]),
        ],
        project,
        timeout=300,
    )
    servers = Servers(f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")
    with contextlib.ExitStack() as stack, Emulator(served, {KEY}, part_size=4096) as emu:
        env = {
            "PREFECT_API_URL": servers.prefect + "/api",
            "MLFLOW_TRACKING_URI": servers.mlflow,
            "AIHUB_APIKEY": KEY,
            "AIHUB_BASE_URL": emu.url,
            "PREFECT_WORKER_QUERY_SECONDS": "2",
        }
        workers: list[subprocess.Popen] = []
        stack.callback(lambda: [_stop(w) for w in workers])
        yield {
            "project": project,
            "served": served,
            "remote": remote,
            "servers": servers,
            "env": env,
            "tmp": tmp,
            "workers": workers,
        }
    sh([sys.executable, "-m", "kocap.cli", "ui", "stop"], project)  # idempotent after the last test's stop


def _worker(ops, pool: str, folder: Path, env: dict) -> subprocess.Popen:
    log = (ops["tmp"] / f"worker-{pool}.log").open("ab")
    full = {
        **os.environ,
        "PREFECT_HOME": str(folder / ".prefect"),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        **env,
    }
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", pool],
        cwd=folder,
        env=full,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ops["workers"].append(proc)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def test_new_aihub_data_triggers_a_retrain_and_a_new_model_version(ops):
    project, servers, env = ops["project"], ops["servers"], ops["env"]
    deployed = sh([sys.executable, "-m", "kocap.cli", "deploy"], project, env=env).stdout
    assert "lifecycle/kocap" in deployed and "watch-aihub/kocap" in deployed and "finetune/local" in deployed
    (watch,) = [
        d
        for d in _api(f"{servers.prefect}/api/deployments/filter", {})
        if d["name"] == "kocap" and d["entrypoint"].startswith("flows/watch.py")
    ]
    assert watch["schedules"][0]["schedule"]["cron"] == "0 3 * * *"  # ops.watch_cron
    _worker(ops, "local", project, env)

    sh([str(BIN / "prefect"), "deployment", "run", "watch-aihub/kocap"], project, env=env)
    (first,) = servers.wait_versions(1)
    (started,) = servers.flow_runs("lifecycle")  # by the trigger, with the event's snapshot id
    assert started["parameters"]["trigger"] == f"kocap.aihub.data-landed {first_snapshot(first)}"
    # a champion to compare the retrained model with (the quick model may fail the gate on its own)
    sh([sys.executable, "-m", "kocap.cli", "promote", "1", "--force", "--reason", "a champion"], project, env=env)
    clips_before = len(pd.read_parquet(project / paths.PREDICTIONS))

    # new data lands on AI-Hub: more clips = new TS_/TL_ zips; the old ones are byte-identical
    build_aihub_sample(ops["served"], SampleParams(**{**SMALL, "num_clips": 32}))
    sh([str(BIN / "prefect"), "deployment", "run", "watch-aihub/kocap"], project, env=env)
    versions = servers.wait_versions(2)
    second = versions[1]
    assert first_snapshot(second) != first_snapshot(first)
    runs = servers.flow_runs("lifecycle")
    assert len(runs) == 2 and first_snapshot(second) in runs[1]["parameters"]["trigger"]
    _the_gate_rescored_the_champion_on_the_new_clips(project, servers.mlflow, clips_before)
    assert len(pd.read_parquet(project / paths.MANIFEST)) == 32
    assert json.loads(dvc(project, "status", "--json").stdout) == {}
    # the key reached neither the Prefect logs nor MLflow
    logs = json.dumps(_api(f"{servers.prefect}/api/logs/filter", {"limit": 200}), ensure_ascii=False)
    assert "data-landed" in logs or "AI-Hub tree" in logs
    assert KEY not in logs and KEY.encode() not in (project / "mlflow.db").read_bytes()


def _the_gate_rescored_the_champion_on_the_new_clips(project: Path, mlflow_uri: str, clips_before: int) -> None:
    """New data changed the validation set: the champion was captioned again on the new clips and the gate
    compared the two models there, not against the number stored when the champion was registered."""
    from mlflow import MlflowClient

    from kocap.evaluate.metrics import clip_scores
    from kocap.registry.champion import cache_path

    client = MlflowClient(tracking_uri=mlflow_uri)
    champion = client.get_model_version_by_alias("kocap", "champion")
    gate = client.get_model_version("kocap", "2").tags
    val = pd.read_parquet(project / paths.PREDICTIONS)
    assert gate["gate.champion_version"] == str(champion.version) == "1"
    assert int(gate["gate.clips"]) == len(val) > clips_before
    budget = json.loads((project / paths.METRICS).read_text(encoding="utf-8"))["max_new_tokens"]
    cached = project / cache_path(champion, gate["gate.val_set"], budget)  # captioned with v2's budget
    theirs = json.loads(cached.read_text(encoding="utf-8"))  # the champion's captions of the current clips
    assert len(theirs) == len(val)
    on_these_clips = clip_scores([[r] for r in val["reference"]], theirs, gate["gate.metric"])[0]
    assert float(gate["gate.champion"]) == pytest.approx(on_these_clips, abs=1e-6)
    rows = json.loads((project / paths.REGISTER_REPORT).read_text(encoding="utf-8"))["placement"]
    assert any(r["what"] == "champion v1, same clips" for r in rows)


def first_snapshot(version: dict) -> str:
    return {t["key"]: t["value"] for t in version["tags"]}["aihub.snapshot_id"]


def test_stage_2_runs_on_a_second_pool_and_survives_a_killed_worker(ops):
    """The GPU pool's worker lives in its own clone; only the DVC remote and MLflow are shared."""
    project, servers, env = ops["project"], ops["servers"], ops["env"]
    gpu = ops["tmp"] / "gpu-worker"
    sh(["git", "clone", "-q", str(project), str(gpu)], ops["tmp"])
    dvc(gpu, "remote", "modify", "--local", "local", "url", str(ops["remote"]))
    gpu_env = {k: v for k, v in env.items() if not k.startswith("AIHUB")}  # the GPU side never talks to AI-Hub
    sh([sys.executable, "-m", "kocap.cli", "deploy", "--only", "finetune", "--pool", "gpu"], gpu, env=gpu_env)
    worker = _worker(ops, "gpu", gpu, gpu_env)
    killed = threading.Event()
    threading.Thread(target=_kill_after_first_checkpoint, args=(worker, gpu, killed), daemon=True).start()

    proc = sh(
        [
            sys.executable,
            "-m",
            "kocap.cli",
            "run",
            "ops.finetune_pool=gpu",
            "stage2.epochs=4",
            "stage2.checkpoint_every=2",
        ],
        project,
        env=env,
        timeout=1200,
    )
    summary = json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])
    assert killed.is_set() and summary["finetune"]["ran"] is True
    states = [r["state_type"] for r in servers.flow_runs("finetune")]
    assert states[0] == "CRASHED" and states[-1] == "COMPLETED"
    report = json.loads((project / "reports/finetune.json").read_text(encoding="utf-8"))
    assert report["resumed_from"] >= 2, "the retry resumed from the killed run's checkpoint"
    assert not (gpu / "data/raw").exists(), "the worker got only stage 2's inputs, through the DVC remote"
    assert _finetune_outs(project) == _finetune_outs(gpu)
    assert json.loads(dvc(project, "status", "--json").stdout) == {}
    assert len(servers.versions()) == 3


def _finetune_outs(root: Path) -> list:
    import yaml

    return yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))["stages"]["finetune"]["outs"]


def _kill_after_first_checkpoint(worker: subprocess.Popen, folder: Path, done: threading.Event) -> None:
    """Kill the flow-run process on the worker once stage 2 has written a checkpoint."""
    ckpt = folder / "models/finetune/checkpoints"
    deadline = time.time() + 1200
    while time.time() < deadline and not (ckpt.exists() and any(ckpt.glob("step-*"))):
        time.sleep(0.2)
    for child in psutil.Process(worker.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    done.set()


def _answer(url: str, headers: dict, method: str = "GET") -> tuple[int, dict]:
    import urllib.error

    req = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}


def test_the_prefect_ui_answers_only_its_own_origin_and_host(ops):
    """A web page elsewhere cannot drive the API (deployments a local worker runs): no CORS grant for
    another origin, and a DNS-rebinding request (another Host) is refused."""
    api = ops["servers"].prefect + "/api/deployments/filter"
    port = ops["servers"].prefect.rsplit(":", 1)[1]
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    status, headers = _answer(api, {"Origin": "http://evil.example", **preflight}, "OPTIONS")
    assert status == 400 and "access-control-allow-origin" not in headers
    status, headers = _answer(api, {"Origin": ops["servers"].prefect, **preflight}, "OPTIONS")
    assert status == 200 and headers["access-control-allow-origin"] == ops["servers"].prefect
    assert _answer(ops["servers"].prefect + "/api/health", {"Host": f"evil.example:{port}"})[0] == 400
    assert _answer(ops["servers"].prefect + "/api/health", {})[0] == 200


def test_ui_stop_stops_both_servers(ops):
    project, servers = ops["project"], ops["servers"]
    assert "prefect" in sh([sys.executable, "-m", "kocap.cli", "ui", "status"], project).stdout
    seen = sh(
        [
            sys.executable,
            "-c",
            "import os, pathlib; from kocap.env import setup_environment; "
            "setup_environment(pathlib.Path.cwd()); print(os.environ['PREFECT_API_URL'], "
            "os.environ['MLFLOW_TRACKING_URI'])",
        ],
        project,
        env={"MLFLOW_TRACKING_URI": None},
    ).stdout.split()
    assert seen == [servers.prefect + "/api", servers.mlflow]  # `make demo` reports to the running UIs
    for w in ops["workers"]:
        _stop(w)
    assert "stopped: prefect, mlflow" in sh([sys.executable, "-m", "kocap.cli", "ui", "stop"], project).stdout
    for url in (servers.prefect + "/api/health", servers.mlflow + "/health"):
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)
    assert not (project / ".kocap-ui/servers.json").exists()
