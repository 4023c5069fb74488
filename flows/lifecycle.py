"""The lifecycle flow: every stage of the stage table in order, each skipped when DVC says it is
up to date, then `dvc push`. With `ops.finetune_pool` set, stage 2 runs as the `finetune/POOL`
deployment on that pool's workers and comes back through the DVC remote and MLflow.

    kocap run                       # or: python -m flows.lifecycle
    kocap run data.sample.num_clips=300
    kocap deploy                    # as a deployment, started by watch-aihub's event (README, operations)
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from kocap import pipeline
from kocap.config import load_config, write_overrides
from kocap.workspace import exclusive
from tasks.fanout import fan_out
from tasks.stage_tasks import ON_POOL_TASKS, STAGE_TASKS, pool_of
from tasks.stage_tasks import push as push_task


@flow(name="lifecycle", log_prints=True)
def lifecycle(
    root: str = ".", overrides: list[str] | None = None, push: bool = True, wait_s: float = 3600, trigger: str = ""
) -> dict:
    """Overrides are written to params.yaml first, so dvc.lock records exactly what ran. A run waits up
    to `wait_s` for another one in the same workspace (the CLI has already taken the lock itself)."""
    project = Path(root).resolve()
    if trigger:
        get_run_logger().info("started by %s", trigger)
    with exclusive(project, wait_s):
        if overrides:
            write_overrides(project / "params.yaml", overrides)
        ops = load_config(project / "params.yaml").ops
        summary = {}
        for stage in pipeline.STAGES:
            fan_out(stage.name, str(project))  # stages with shards (frames, evaluate): those as tasks first
            run = ON_POOL_TASKS[stage.name] if pool_of(stage.name, ops) else STAGE_TASKS[stage.name]
            summary[stage.name] = run(name=stage.name, root=str(project))
        if push:
            summary["pushed_files"] = push_task(str(project))
    return summary


if __name__ == "__main__":
    from kocap.env import setup_environment

    setup_environment(Path.cwd())
    lifecycle(root=str(Path.cwd()))
