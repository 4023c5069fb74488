"""Running one stage in another workspace (stage 2 on a GPU worker) with no shared folder: the two
sides exchange only DVC hashes (through the DVC remote) and an MLflow run id.

    parent                                   worker (its own clone, same commit, same DVC remote)
    request(): push the stage's inputs,      apply(): write params.yaml and the upstream dvc.lock
      send params + upstream lock entries      entries, `dvc pull` exactly those inputs
                                             ... the stage runs (resuming from its checkpoints) ...
    receive(): read the MLflow handoff run,  publish(): `dvc push` the outputs, log an MLflow run
      merge its lock entry, `dvc pull` the     with the stage's dvc.lock entry and its small reports
      outputs, check DVC agrees

A worker that ran other code or data is caught by `receive`: DVC then says the stage is not up to
date in the parent, and the parent refuses the result.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from . import dvcops, pipeline
from .registry.lineage import git_state
from .train.tracking import EXPERIMENT, use_experiment

HANDOFF_TAG = "kocap.handoff_id"


class HandoffError(RuntimeError):
    """The worker's result is missing or does not match what the parent asked for."""


def request(root: Path, name: str) -> dict:
    """Push the stage's inputs to the DVC remote; the JSON-able request a worker needs to run it."""
    inputs = input_outs(name)
    dvcops.push(root, inputs)
    complete_on_remote(root, inputs, f"{name}'s inputs")
    upstream = {s.name: dvcops.lock_entry(root, s.name) for s in producers(name)}
    return {
        "stage": name,
        "params_yaml": (root / "params.yaml").read_text(encoding="utf-8"),
        "upstream": upstream,
        "git_commit": git_state(root)["git.commit"],
    }


def apply(root: Path, req: dict) -> list[str]:
    """Worker side: make this workspace hold exactly the requested inputs; returns warnings."""
    warnings = []
    here = git_state(root)["git.commit"]
    if here != req["git_commit"]:
        warnings.append(
            f"worker is at commit {here}, the request came from {req['git_commit']}: "
            "if the code differs the parent will refuse the result"
        )
    (root / "params.yaml").write_text(req["params_yaml"], encoding="utf-8")
    dvcops.merge_lock(root, req["upstream"])
    dvcops.pull(root, input_outs(req["stage"]))
    return warnings


def publish(root: Path, name: str, handoff_id: str, details: dict | None = None) -> str:
    """Worker side: push the stage's outputs and record the handoff in MLflow; returns its run id."""
    import mlflow

    dvcops.push(root, [name])
    stage = pipeline.get(name)
    complete_on_remote(root, list(stage.outs), f"{name}'s outputs")
    use_experiment(root)
    with mlflow.start_run(run_name=f"{name}-handoff") as run:
        mlflow.set_tags(
            {
                HANDOFF_TAG: handoff_id,
                "kocap.stage": f"{name}-handoff",
                **{f"kocap.{k}": str(v) for k, v in (details or {}).items()},
            }
        )
        mlflow.log_dict(dvcops.lock_entry(root, name), "handoff/lock_entry.json")
        for small in stage.metrics + stage.plots:  # kept in git, not DVC: they travel as artifacts
            if (root / small).exists():
                mlflow.log_artifact(str(root / small), f"handoff/files/{Path(small).parent}")
        return run.info.run_id


def receive(root: Path, name: str, handoff_id: str) -> str:
    """Parent side: take the worker's outputs into this workspace; returns the handoff run id."""
    import mlflow

    runs = mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string=f"tags.`{HANDOFF_TAG}` = '{handoff_id}'", output_format="list"
    )
    if not runs:
        raise HandoffError(
            f"no MLflow handoff run for {name} {handoff_id}: did the worker finish and log to the same "
            "MLflow tracking server?"
        )
    run_id = runs[0].info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="handoff", dst_path=tmp))
        entry = json.loads((local / "lock_entry.json").read_text(encoding="utf-8"))
        for f in (local / "files").rglob("*") if (local / "files").exists() else []:
            if f.is_file():
                dest = root / f.relative_to(local / "files")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
    dvcops.merge_lock(root, {name: entry})
    dvcops.pull(root, [name])
    if dvcops.changed(root, name):
        raise HandoffError(
            f"the worker's {name} result does not match this workspace (other code, params or data): "
            f"run `dvc status {name}`; handoff run {run_id}"
        )
    return run_id


def complete_on_remote(root: Path, paths: list[str], what: str) -> None:
    """The remote holds every object of `paths` (pushing again what a killed push left out), or a clear error."""
    repushed, missing = dvcops.verify_remote(root, paths)
    if missing:
        raise HandoffError(
            f"the DVC remote lacks {len(missing)} object(s) of {what} even after pushing them again "
            f"(first: {missing[0]}): check the remote (`dvc remote list`, access, free space); "
            "the other machine would pull an incomplete copy"
        )


def producers(name: str) -> list[pipeline.Stage]:
    """The stages whose outputs this stage reads."""
    deps = set(pipeline.get(name).deps)
    return [s for s in pipeline.STAGES if deps & set(s.outs)]


def input_outs(name: str) -> list[str]:
    """The stage's deps that are outputs of other stages (what a worker must pull)."""
    produced = {o for s in pipeline.STAGES for o in s.outs}
    return [d for d in pipeline.get(name).deps if d in produced]
