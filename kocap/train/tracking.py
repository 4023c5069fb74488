"""MLflow for the training stages: one run per stage, the whole config as params, per-step metrics.

The tracking URI comes from MLflow's own setting (MLFLOW_TRACKING_URI, set by the entry points to
a SQLite file in the project); nothing secret is ever logged (the config holds no key).
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
from collections.abc import Callable
from pathlib import Path

from .. import faults
from ..config import Config

EXPERIMENT = "kocap"


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flat(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def use_experiment(root: Path) -> None:
    """Make the kocap experiment current, creating it with its artifacts under the project's mlruns/."""
    import mlflow

    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=(root / "mlruns").resolve().as_uri())
    mlflow.set_experiment(EXPERIMENT)


@contextlib.contextmanager
def mlflow_run(cfg: Config, stage: str, root: Path):
    import mlflow

    use_experiment(root)
    close_orphaned_runs()
    with mlflow.start_run(run_name=stage) as run:
        mlflow.set_tags({"kocap.stage": stage, "kocap.pid": str(os.getpid()), "kocap.host": socket.gethostname()})
        faults.point(f"in-run:{stage}")  # tests: a kill while the MLflow run is open
        params = flat(cfg.model_dump(by_alias=True, mode="json"))
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        yield run


def close_orphaned_runs() -> list[str]:
    """Mark as KILLED the kocap runs still RUNNING whose process on this host is gone (a kill -9)."""
    import mlflow
    from mlflow import MlflowClient

    from ..ui import alive

    client, closed = MlflowClient(), []
    for run in mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string="attributes.status = 'RUNNING'", output_format="list"
    ):
        tags = run.data.tags
        if tags.get("kocap.host") == socket.gethostname() and "kocap.pid" in tags and not alive(int(tags["kocap.pid"])):
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


def log_step(step: int, metrics: dict) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def loss_plot(losses: list[float], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=1)
    ax.set(xlabel="step", ylabel="loss", title=title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train_tracked(
    cfg: Config,
    stage: str,
    root: Path,
    model,
    batch_loss,
    spec,
    plot: Path,
    save: Callable[[], None],
    track: bool = True,
) -> dict:
    """run_loop inside an MLflow run: per-step metrics, then `save()`, then the loss curve. With
    `track=False` (the GPU check on a bare machine) the same loop runs without MLflow."""
    from .loop import run_loop

    if not track:
        rates = []
        result = run_loop(model, batch_loss, spec, lambda step, m: rates.append(m["samples_per_s"]))
        save()
        return {**result, "median_samples_per_s": statistics.median(rates) if rates else None, "mlflow_run_id": None}
    import mlflow

    history, rates = [], []

    def on_step(step: int, metrics: dict) -> None:
        history.append(metrics["loss"])
        rates.append(metrics["samples_per_s"])
        log_step(step, metrics)

    with mlflow_run(cfg, stage, root) as run:
        result = run_loop(model, batch_loss, spec, on_step)
        save()
        if history:
            mlflow.log_artifact(str(loss_plot(history, plot, f"{stage} loss")))
    return {
        **result,
        "median_samples_per_s": statistics.median(rates) if rates else None,
        "mlflow_run_id": run.info.run_id,
    }
