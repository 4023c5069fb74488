"""watch-aihub: look at the AI-Hub file tree, and when filekeys are new or changed, ingest them and
emit `kocap.aihub.data-landed`; the lifecycle deployment's trigger then retrains on the new data.

    kocap watch                     # once, here; `kocap deploy` schedules it (ops.watch_cron)
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.events import emit_event

from kocap import dvcops, pipeline
from kocap.config import load_config
from kocap.data import ingest
from kocap.env import RunEnv
from kocap.workspace import exclusive

EVENT = "kocap.aihub.data-landed"


@task(name="aihub-tree-diff", retries=2, retry_delay_seconds=30)
def new_filekeys(root: str) -> tuple[str, list[str]]:
    project = Path(root)
    return ingest.pending(load_config(project / "params.yaml"), project, RunEnv.from_environ())


@task(name="ingest-new-data", retries=2, retry_delay_seconds=30)
def ingest_new(root: str) -> dict:
    """The ingest stage, run even though DVC sees no change: the change is on the server."""
    project = Path(root)
    report = pipeline.run_stage("ingest", load_config(project / "params.yaml"), project, RunEnv.from_environ())
    dvcops.commit(project, "ingest")
    return {k: report[k] for k in ("snapshot_id", "downloaded", "samples")}


@flow(name="watch-aihub", log_prints=True)
def watch_aihub(root: str = ".", wait_s: float = 3600) -> dict:
    log = get_run_logger()
    project = Path(root).resolve()
    snapshot, todo = new_filekeys(str(project))
    if not todo:
        log.info("AI-Hub tree %s: nothing new", snapshot)
        return {"snapshot_id": snapshot, "landed": []}
    log.info("AI-Hub tree %s: %d new or changed filekey(s): %s", snapshot, len(todo), ", ".join(todo))
    with exclusive(project, wait_s):
        landed = ingest_new(str(project))
    cfg = load_config(project / "params.yaml")
    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"kocap.aihub.{cfg.data.aihub.dataset_key}",
            "prefect.resource.name": f"AI-Hub dataset {cfg.data.aihub.dataset_key}",
        },
        payload={"snapshot_id": landed["snapshot_id"], "filekeys": landed["downloaded"], "project": str(project)},
    )
    log.info("emitted %s for snapshot %s", EVENT, landed["snapshot_id"])
    return {"snapshot_id": landed["snapshot_id"], "landed": landed["downloaded"]}
