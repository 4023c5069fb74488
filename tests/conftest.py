"""Shared fixtures. Tests run offline, on CPU, with a temporary PREFECT_HOME per session."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import torch

from kocap.env import OFFLINE_ENV  # noqa: E402  (before Prefect is imported anywhere)
from kocap.model.runtime import cores

# pytest-xdist workers (`make test` runs two): workers x torch threads <= cores, for this process and every
# kocap/dvc subprocess a test starts (they inherit the variable). Two lifecycle runs at full threads each
# took ~6x as long as one alone: oversubscribed OpenMP threads, not fair sharing.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = str(max(1, cores() // _WORKERS))
    os.environ.update(OMP_NUM_THREADS=_THREADS, MKL_NUM_THREADS=_THREADS)
    # torch is already imported (above), and OpenMP read its variables then: the worker's own training and
    # decoding would run on every core beside the other worker (`make test` 48 min against 39, 2026-12-06)
    torch.set_num_threads(int(_THREADS))

# One PREFECT_HOME and MLflow store per pytest process (controller, each xdist worker). A process it spawns
# that imports a test module (a frames worker, a killed run) imports this file too and takes its parent's.
_OWNER = os.environ.get("PYTEST_XDIST_WORKER", "controller")
_OWN = os.environ.get("KOCAP_TEST_HOME_OF") != _OWNER or not os.environ.get("KOCAP_TEST_HOME")
_HOME = tempfile.mkdtemp(prefix="kocap-test-prefect-") if _OWN else os.environ["KOCAP_TEST_HOME"]
os.environ.update(KOCAP_TEST_HOME=_HOME, KOCAP_TEST_HOME_OF=_OWNER)
os.environ.update({**OFFLINE_ENV, "PREFECT_HOME": _HOME, "MLFLOW_TRACKING_URI": f"sqlite:///{_HOME}/mlflow.db"})
os.environ.pop("AIHUB_APIKEY", None)
os.environ.pop("AIHUB_BASE_URL", None)
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402

from kocap.config import SampleParams  # noqa: E402
from kocap.sample.build import build_aihub_sample  # noqa: E402
from kocap.scratch import BIN, SHARED_PREFECT  # noqa: E402
from kocap.ui import wait_healthy  # noqa: E402

os.environ.pop(SHARED_PREFECT, None)

REPO = Path(__file__).resolve().parents[1]
# 15% validation (the defaults take 6% of 720): a 24-clip sample then still has a few validation clips
SMALL = dict(num_clips=24, val_frac=0.15, clips_per_zip=8, num_images=6, part_size=1024)


@pytest.fixture(scope="session", autouse=True)
def one_prefect_server(request):
    """One real Prefect server per test process for the scratch projects' commands (kocap.scratch.sh), where
    a session runs the slow tests: a temporary server started, migrated and stopped by each `kocap run` cost
    ~30 s of its ~95 s. The newcomer's clone and the tests of temporary servers still start their own."""
    if not any(item.get_closest_marker("slow") for item in request.session.items):
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tempfile.mkdtemp(prefix="kocap-test-prefect-server-")
    env = {**os.environ, "PREFECT_HOME": home}
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(Path(home) / "server.log", "wb") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(url + "/health", server, Path(home) / "server.log", timeout_s=180)
        os.environ[SHARED_PREFECT] = url
        yield url
    finally:
        os.environ.pop(SHARED_PREFECT, None)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def pytest_unconfigure(config):
    """This process's PREFECT_HOME and MLflow store go with it (each xdist worker made its own)."""
    if _OWN:
        shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def small_params() -> SampleParams:
    return SampleParams(**SMALL)


@pytest.fixture(scope="session")
def sample_server_root(tmp_path_factory, small_params) -> Path:
    """An AI-Hub-shaped folder (dataset 71849) that emulators in tests serve; never modified."""
    root = tmp_path_factory.mktemp("aihub-server")
    build_aihub_sample(root, small_params)
    return root


# `make test` hands each file to one pytest-xdist worker (`--dist loadfile`): a module's tests share one
# module-scoped project, each building on what the last left, and split across two workers each would repeat
# the module's first lifecycle run on its own copy. (`loadgroup` would not do: with pytest 9 xdist's group
# suffix never reaches the node id.) The longest files go first, so the other worker fills in beside them.
LONGEST_FIRST = (
    "test_newcomer",
    "test_lifecycle",
    "test_production_format",
    "test_faults",
    "test_operations",
    "test_training",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.module.__name__.rsplit(".", 1)[-1]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a module stays as written
