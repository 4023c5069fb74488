"""Stage 2 as a flow of its own, for a GPU work pool: a worker in its own clone of the project
pulls the inputs named in the request from the DVC remote, runs finetune (resuming from its own
checkpoints after a crash), pushes the adapter and records the handoff in MLflow.

    # on the GPU machine, in a clone of the project at the same commit, with the same DVC remote:
    kocap deploy --only finetune --pool gpu-t4 && prefect worker start --pool gpu-t4
    # then, where the lifecycle runs: ops.finetune_pool: gpu-t4 in params.yaml
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from kocap import handoff
from kocap.workspace import exclusive
from tasks.stage_tasks import STAGE_TASKS


@flow(name="finetune", log_prints=True)
def finetune(request: dict, root: str = ".", wait_s: float = 3600) -> dict:
    log = get_run_logger()
    project = Path(root).resolve()
    with exclusive(project, wait_s):
        for warning in handoff.apply(project, request):
            log.warning(warning)
        result = STAGE_TASKS["finetune"](name="finetune", root=str(project))
        run_id = handoff.publish(
            project, "finetune", request["handoff_id"], {"worker_root": project, "ran": result.get("ran")}
        )
    log.info("finetune outputs pushed to the DVC remote; MLflow handoff run %s", run_id)
    return {"handoff_run": run_id, "ran": result.get("ran")}
