"""The two UIs in the background: a Prefect server (flow runs, task states, logs, deployments,
schedules, triggers) and an MLflow server (runs, metrics, reports, registry, lineage), both on
loopback, both on the project's own state (`.prefect/`, `mlflow.db`, `mlruns/`).

    make ui          # = kocap ui start: http://127.0.0.1:4200 and http://127.0.0.1:5000
    make ui-stop     # = kocap ui stop

Their pids and URLs go to `.kocap-ui/servers.json`; while they run, every `kocap` command in the
project talks to them (see `server_env`), so `make demo` shows up in both UIs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STATE = ".kocap-ui/servers.json"


class UIError(RuntimeError):
    """A server did not come up (its log says why)."""


def start(root: Path, prefect_port: int = 4200, mlflow_port: int = 5000, timeout_s: float = 120) -> dict:
    """Start both servers unless they already run; wait until both answer their health checks."""
    root = root.resolve()
    running = servers(root)
    if running:
        return running
    (root / ".kocap-ui").mkdir(exist_ok=True)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PREFECT_HOME": os.environ.get("PREFECT_HOME", str(root / ".prefect"))}
    env.pop("PREFECT_API_URL", None)  # the server itself is not a client of another server
    # Prefect's app behind a Host check, CORS limited to its own origin (ui_server.py)
    prefect = _spawn([sys.executable, "-m", "kocap.ui_server", "--port", str(prefect_port)], root, env, "prefect")
    mlflow = _spawn(
        [
            str(bin_dir / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
            (root / "mlruns").as_uri(),
            "--workers",
            "1",
        ],
        root,
        env,
        "mlflow",
    )
    state = {
        "prefect": {"pid": prefect.pid, "url": f"http://127.0.0.1:{prefect_port}", "log": ".kocap-ui/prefect.log"},
        "mlflow": {"pid": mlflow.pid, "url": f"http://127.0.0.1:{mlflow_port}", "log": ".kocap-ui/mlflow.log"},
    }
    (root / STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")
    try:
        wait_healthy(state["prefect"]["url"] + "/api/health", prefect, root / state["prefect"]["log"], timeout_s)
        wait_healthy(state["mlflow"]["url"] + "/health", mlflow, root / state["mlflow"]["log"], timeout_s)
    except UIError:
        stop(root)
        raise
    return state


def stop(root: Path) -> list[str]:
    """Stop both servers (their whole process groups); returns the names of those stopped."""
    path = root.resolve() / STATE
    if not path.exists():
        return []
    stopped = []
    for name, server in json.loads(path.read_text(encoding="utf-8")).items():
        if alive(server["pid"]):
            os.killpg(server["pid"], signal.SIGTERM)
            _wait_gone(server["pid"])
            stopped.append(name)
    path.unlink()
    return stopped


def servers(root: Path) -> dict:
    """The servers recorded for this project that are still alive ({} when none)."""
    path = root.resolve() / STATE
    if not path.exists():
        return {}
    state = json.loads(path.read_text(encoding="utf-8"))
    return state if all(alive(s["pid"]) for s in state.values()) else {}


def server_env(root: Path) -> dict[str, str]:
    """PREFECT_API_URL and MLFLOW_TRACKING_URI for the running servers of this project ({} when none)."""
    state = servers(root)
    if not state:
        return {}
    return {"PREFECT_API_URL": state["prefect"]["url"] + "/api", "MLFLOW_TRACKING_URI": state["mlflow"]["url"]}


def _spawn(cmd: list[str], root: Path, env: dict, name: str) -> subprocess.Popen:
    log = (root / ".kocap-ui" / f"{name}.log").open("ab")
    # a session of its own: `stop` kills the server with every worker process it started
    return subprocess.Popen(
        cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UIError(f"{proc.args[0]} exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise UIError(f"{url} did not answer within {timeout_s:.0f} s; see {log}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie left by our own Popen counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        os.killpg(pid, signal.SIGKILL)
