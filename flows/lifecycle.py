"""The lifecycle flow: every stage of the stage table in order, each skipped when DVC says it is
up to date, then `dvc push`.

    kocap run                       # or: python -m flows.lifecycle
    kocap run data.sample.num_clips=300
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from kocap import stages
from kocap.config import write_overrides
from tasks.stages import STAGE_TASKS, push as push_task


@flow(name="lifecycle", log_prints=True)
def lifecycle(root: str = ".", overrides: list[str] | None = None, push: bool = True) -> dict:
    """Overrides are written to params.yaml first, so dvc.lock records exactly what ran."""
    if overrides:
        write_overrides(Path(root) / "params.yaml", overrides)
    summary = {}
    for stage in stages.STAGES:
        summary[stage.name] = STAGE_TASKS[stage.name](name=stage.name, root=root)
    if push:
        summary["pushed_files"] = push_task(root)
    return summary


if __name__ == "__main__":
    from kocap.cli import setup_environment

    setup_environment(Path.cwd())
    lifecycle(root=str(Path.cwd()))
