"""One Prefect task per stage. DVC decides whether a stage is up to date; Prefect's cache keys on
that decision, so an up-to-date stage shows as Cached (or, right after a `dvc repro`, completes in
a second without running).
"""
from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import CachePolicy

from kocap import dvcops, stages
from kocap.config import load_config


class DvcStageCache(CachePolicy):
    """Cache key = the stage's dvc.lock entry when DVC says it is up to date; no key otherwise."""

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs):
        return dvcops.up_to_date_key(Path(inputs["root"]), inputs["name"])


def _run(name: str, root: str) -> dict:
    log = get_run_logger()
    project = Path(root)
    if not dvcops.changed(project, name):
        log.info("%s is up to date (dvc.lock matches deps, params and outs): skipped", name)
        return {"stage": name, "ran": False}
    result = stages.run_stage(name, load_config(project / "params.yaml"), project, stages.RunEnv.from_environ())
    dvcops.commit(project, name)
    log.info("%s done; outputs committed to DVC", name)
    return {"stage": name, "ran": True, "result": _summary(result)}


def _summary(result) -> dict:
    """The stage report as plain data for Prefect's result (long note lists become a count)."""
    data = dict(getattr(result, "__dict__", {}) or {})
    data["notes"] = len(data.get("notes", []))
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str, dict, list))}


STAGE_TASKS = {
    s.name: task(_run, name=s.name, cache_policy=DvcStageCache(), retries=s.retries, retry_delay_seconds=5,
                 persist_result=True)
    for s in stages.STAGES
}


@task(name="dvc-push", retries=1)
def push(root: str) -> int:
    """Send the outputs to the DVC remote, so another machine can `dvc pull` exactly this data."""
    n = dvcops.push(Path(root))
    get_run_logger().info("dvc push: %d file(s) sent", n)
    return n
