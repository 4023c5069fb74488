"""The deployments, defined from params.yaml (`ops`) and this working folder:

    lifecycle/kocap      on ops.work_pool; on demand, and on every `kocap.aihub.data-landed` event
    watch-aihub/kocap    on ops.work_pool; cron ops.watch_cron
    finetune/POOL        on POOL = ops.finetune_pool, else ops.work_pool; the lifecycle uses it once
                         ops.finetune_pool names POOL (for a GPU pool, deploy it from the worker's clone)

    kocap deploy                                  # needs a Prefect server: `make ui` (PREFECT_API_URL)
    kocap deploy --only finetune --pool gpu-t4    # on the GPU machine
    prefect worker start --pool local             # a worker that runs them

Process pools run a flow in the folder it was deployed from; a Docker or Kubernetes pool instead
runs an image holding the project (README, operations).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.events import DeploymentEventTrigger

from flows.watch import EVENT
from kocap.config import load_config

NAME = "kocap"
ENTRYPOINTS = {
    "lifecycle": "flows/lifecycle.py:lifecycle",
    "watch-aihub": "flows/watch.py:watch_aihub",
    "finetune": "flows/finetune.py:finetune",
}


def ensure_pool(name: str, kind: str = "process") -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type=kind))
        except ObjectAlreadyExists:
            pass


def deploy(root: Path, only: list[str] | None = None, pool: str | None = None) -> dict[str, str]:
    """Create the work pools and deployments; returns {deployment name: id}."""
    ops = load_config(root / "params.yaml").ops
    wanted = only or ["lifecycle", "watch-aihub", "finetune"]
    ids = {}
    for name in wanted:
        target_pool = (pool or ops.finetune_pool or ops.work_pool) if name == "finetune" else (pool or ops.work_pool)
        ensure_pool(target_pool)
        source = flow.from_source(source=str(root.resolve()), entrypoint=ENTRYPOINTS[name])
        dep_name = target_pool if name == "finetune" else NAME
        ids[f"{name}/{dep_name}"] = str(
            source.deploy(
                name=dep_name,
                work_pool_name=target_pool,
                build=False,
                push=False,
                print_next_steps=False,
                **_extras(name, ops),
            )
        )
    return ids


def _extras(name: str, ops) -> dict:
    if name == "watch-aihub":
        return {"cron": ops.watch_cron, "description": "Look for new AI-Hub data; ingest it and emit " + EVENT}
    if name == "lifecycle":
        trigger = DeploymentEventTrigger(
            name="retrain on new AI-Hub data",
            expect={EVENT},
            match={"prefect.resource.id": "kocap.aihub.*"},
            parameters={"trigger": f"{EVENT} {{{{ event.payload.snapshot_id }}}}"},
        )
        return {"triggers": [trigger], "description": "Every stage that is not up to date, then register"}
    return {"description": "Stage 2 (QLoRA) on this pool's workers; inputs and outputs via the DVC remote"}
