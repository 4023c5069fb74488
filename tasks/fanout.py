"""Fan-out: the shards of frame extraction and of evaluation as Prefect tasks, on the task runner
`ops.task_runner` names: threads here, or a Dask cluster (prefect-dask) for users who outgrow one
machine. Each shard job is plain data and writes its own file; the stage task that follows only
collects, so a fanned-out run and `dvc repro` produce the same outputs.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner

from kocap import dvcops, pipeline
from kocap.config import OpsParams, load_config


def _shards(name: str):
    """The stage's shard module, imported when a shard runs: an up-to-date lifecycle never pays for torch."""
    return importlib.import_module(pipeline.get(name).shards)


def _shard_task(name: str, retries: int):
    def run_job(job: dict) -> str:
        return _shards(name).run_job(job)

    return task(run_job, name=f"{name}-shard", retries=retries)


SHARD_TASKS = {s.name: _shard_task(s.name, s.shard_retries) for s in pipeline.STAGES if s.shards}


def task_runner(ops: OpsParams, workers: int):
    if ops.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if ops.dask_address:
            return DaskTaskRunner(address=ops.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": ops.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=workers)


@flow(name="shards")
def run_shards(stage: str, jobs: list[dict]) -> list[str]:
    """Every job as a task on this flow's task runner; fails if any shard fails."""
    futures = SHARD_TASKS[stage].map(jobs)
    return [f.result() for f in futures]


def fan_out(stage: str, root: str) -> int:
    """Run the stage's pending shards as tasks (when the stage must run at all); returns how many."""
    project = Path(root)
    if stage not in SHARD_TASKS or not dvcops.changed(project, stage):
        return 0
    cfg = load_config(project / "params.yaml")
    jobs = _shards(stage).pending_shards(cfg, project)
    if not jobs:
        return 0
    workers = cfg.frames.workers or os.cpu_count() or 1
    runner = task_runner(cfg.ops, workers)
    get_run_logger().info("%s: %d shard(s) on %s", stage, len(jobs), type(runner).__name__)
    jobs = [{**job, "workers": _sharing(cfg.ops, workers, len(jobs))} for job in jobs]
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else 0
    try:
        run_shards.with_options(name=f"{stage}-shards", task_runner=runner)(stage, jobs)
    finally:  # OpenMP keeps a count per thread, torch's native pool one for all: the stages after get all cores
        if "torch" in sys.modules:
            from kocap.model.runtime import cores

            sys.modules["torch"].set_num_threads(threads or cores())
    return len(jobs)


def _sharing(ops: OpsParams, workers: int, jobs: int) -> int:
    """How many workers of this run share one machine's cores (a remote Dask cluster's are its own)."""
    if ops.task_runner == "dask":
        return 1 if ops.dask_address else min(ops.dask_workers, jobs)
    return min(workers, jobs)
