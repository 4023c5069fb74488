"""One Prefect task per stage. DVC decides whether a stage is up to date; Prefect's cache keys on
that decision, so an up-to-date stage shows as Cached (or, right after a `dvc repro`, completes in
a second without running).
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import CachePolicy

from kocap import dvcops, faults, pipeline
from kocap.config import load_config
from kocap.env import RunEnv


class DvcStageCache(CachePolicy):
    """Cache key = the stage's dvc.lock entry when DVC says it is up to date; no key otherwise."""

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs):
        return dvcops.up_to_date_key(Path(inputs["root"]), inputs["name"])


def _skipped(project: Path, name: str) -> dict | None:
    """The task's result when DVC says the stage is up to date; None when it must run."""
    if dvcops.changed(project, name):
        return None
    get_run_logger().info("%s is up to date (dvc.lock matches deps, params and outs): skipped", name)
    return {"stage": name, "ran": False}


def _run(name: str, root: str) -> dict:
    log = get_run_logger()
    project = Path(root)
    if skipped := _skipped(project, name):
        return skipped
    result = pipeline.run_stage(name, load_config(project / "params.yaml"), project, RunEnv.from_environ())
    faults.point(f"after-stage:{name}")  # tests: a kill between a stage's outputs and its DVC commit
    dvcops.commit(project, name)
    log.info("%s done; outputs committed to DVC", name)
    return {"stage": name, "ran": True, "result": _summary(result)}


def _summary(result) -> dict:
    """The stage report as plain data for Prefect's result (long note lists become a count)."""
    data = dict(result or {})
    data["notes"] = len(data.get("notes", []))
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str, dict, list))}


STAGE_TASKS = {
    s.name: task(
        _run, name=s.name, cache_policy=DvcStageCache(), retries=s.retries, retry_delay_seconds=5, persist_result=True
    )
    for s in pipeline.STAGES
}


def _on_pool(name: str, root: str) -> dict:
    """Run the stage as the `NAME/POOL` deployment on a work pool and take its outputs back."""
    from prefect import runtime
    from prefect.deployments import run_deployment

    from kocap import handoff

    log = get_run_logger()
    project = Path(root)
    if skipped := _skipped(project, name):
        return skipped
    ops = load_config(project / "params.yaml").ops
    pool = pool_of(name, ops)
    handoff_id = f"{runtime.task_run.id}-{runtime.task_run.run_count}"
    req = {**handoff.request(project, name), "handoff_id": handoff_id}
    log.info("%s: inputs pushed to the DVC remote; running deployment %s/%s", name, name, pool)
    child = run_deployment(
        f"{name}/{pool}", parameters={"request": req}, timeout=ops.finetune_timeout_s, as_subflow=True
    )
    if not child.state.is_completed():  # crashed or failed: the retry resumes from the worker's checkpoints
        raise RuntimeError(
            f"{name} on pool {pool}: flow run {child.name} ended {child.state.name}: {child.state.message}"
        )
    run_id = handoff.receive(project, name, handoff_id)
    log.info("%s done on pool %s (flow run %s); outputs pulled, MLflow handoff run %s", name, pool, child.name, run_id)
    return {"stage": name, "ran": True, "flow_run": str(child.id), "handoff_run": run_id}


# A killed worker surfaces as a crashed child run: each retry resumes from its checkpoints.
ON_POOL_TASKS = {
    s.name: task(
        _on_pool,
        name=f"{s.name}-on-pool",
        cache_policy=DvcStageCache(),
        retries=s.pool_retries,
        retry_delay_seconds=5,
        persist_result=True,
    )
    for s in pipeline.STAGES
    if s.pool
}


def pool_of(name: str, ops) -> str:
    """The work pool the stage runs on ("" = inside the lifecycle run), from the ops key the table names."""
    key = pipeline.get(name).pool
    return getattr(ops, key) if key else ""


@task(name="dvc-push", retries=1)
def push(root: str) -> int:
    """Send the outputs to the DVC remote, so another machine can `dvc pull` exactly this data."""
    n = dvcops.push(Path(root))
    repushed, missing = dvcops.verify_remote(Path(root))  # object by object: a killed push leaves holes DVC misses
    if missing:
        raise RuntimeError(
            f"the DVC remote still lacks {len(missing)} object(s) after pushing (first: {missing[0]}): "
            "check the remote's access and free space, then `kocap run` again"
        )
    get_run_logger().info(
        "dvc push: %d file(s) sent, %d missing one(s) pushed again; the remote holds every output", n, repushed
    )
    return n + repushed
