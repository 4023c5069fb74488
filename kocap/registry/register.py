"""The register stage: log the captioner as an MLflow pyfunc model with full lineage, register a
new version with alias `challenger`, and promote it to `champion` only through the gate.

    kocap stage register
    kocap promote VERSION --force --reason TEXT     # the logged manual override
    kocap lineage models:/kocap@champion

Gate (gate.py): validation passed; on the same, current validation clips the challenger beats the
champion by more than the noise (paired bootstrap); the unique-caption share is at least
`registry.min_unique_share`; grounding is positive. The decision, its reasons and both scores are
version tags.

Crash-safe: a version is created already tagged with its registration key and `kocap.state=incomplete`;
a rerun (after a kill at any point) finds it by key and completes it instead of registering another;
an incomplete version is never the gate's champion and cannot be promoted.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from .. import faults, paths
from ..config import Config
from ..evaluate.placement import placement, placement_html
from ..io import write_json
from ..model.captioner import trained_adapter
from ..model.family import family, stage1_skip_reason
from ..train.tracking import EXPERIMENT, mlflow_run
from . import base_ref
from .gate import gate
from .lineage import aihub_snapshot, dvc_hashes, git_state, lost_data

DATASETS = {"manifest": paths.MANIFEST, "validated": paths.VALIDATED, "frames": paths.FRAMES}


KEY, STATE = "kocap.key", "kocap.state"  # what a version was registered from; incomplete until its last step
INPUTS = (paths.BASE, paths.FINETUNE, paths.PREFER, paths.MANIFEST, paths.VALIDATED, paths.FRAMES)


class RegistryError(RuntimeError):
    """The registry could not be read or holds a version that cannot be used."""


def run(cfg: Config, root: Path, env=None) -> dict:
    """Register (or, after a crash, complete) the version for these inputs; a rerun never adds another."""
    from mlflow import MlflowClient

    metrics = json.loads((root / paths.METRICS).read_text(encoding="utf-8"))
    validation = json.loads((root / paths.VALIDATE_REPORT).read_text(encoding="utf-8"))
    hashes = dvc_hashes(root)
    client, name = MlflowClient(), cfg.registry.model_name
    key = registration_key(cfg, metrics, validation, hashes)
    version = find_version(client, name, key) or settle(
        client, name, key, create_version(cfg, root, metrics, hashes, key)
    )
    if version.tags.get(STATE) != "complete":
        complete(client, cfg, root, version, metrics, validation, hashes)
    report = report_of(client.get_model_version(name, version.version))
    report["placement"] = placement(metrics, report["comparison"], registered=True)
    log_placement(client, version, report)
    write_json(root / paths.REGISTER_REPORT, report)
    return report


def log_placement(client, version, report: dict) -> None:
    """The score beside its reference points, the champion on the same clips among them, on the version's run."""
    client.log_text(version.run_id, placement_html(report["placement"]), "placement.html")
    if report["comparison"]:
        comparison = report["comparison"]
        client.log_metric(version.run_id, f"champion_same_clips_{comparison['metric']}", float(comparison["champion"]))


def registration_key(cfg: Config, metrics: dict, validation: dict, hashes: dict) -> str:
    """What makes two registrations the same: the model and data hashes, the scores and the params."""
    blob = json.dumps(
        [
            {p: hashes.get(p) for p in INPUTS},
            metrics,
            validation,
            cfg.section("registry"),
            cfg.section("eval"),
            cfg.section("model"),
        ],
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def find_version(client, name: str, key: str):
    """The version an earlier (perhaps killed) registration of the same inputs created, if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name='{name}' and tags.`{KEY}` = '{key}'")
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise
    return min(found, key=lambda v: int(v.version)) if found else None


def settle(client, name: str, key: str, created):
    """After creating: if another registration of the same inputs (another workspace on this registry)
    created one too, the lowest version number is the registration and the others are withdrawn."""
    import logging

    winner = find_version(client, name, key)
    if winner is None or winner.version == created.version:
        return created
    logging.getLogger(__name__).warning(
        "version %s of %s duplicates version %s (same inputs, registered at the same time): withdrawn",
        created.version,
        name,
        winner.version,
    )
    client.delete_model_version(name, created.version)
    return winner


def create_version(cfg: Config, root: Path, metrics: dict, hashes: dict, key: str):
    """Log the pyfunc model (or reuse the one a killed run logged) and create its version, tagged with
    the key and `incomplete` in the same call: a kill at any point leaves something a rerun can find."""
    import mlflow

    model_uri = _logged_model(key) or log_model(cfg, root, metrics, hashes, key)
    faults.point("register.logged")
    version = mlflow.register_model(model_uri, cfg.registry.model_name, tags={KEY: key, STATE: "incomplete"})
    faults.point("register.created")
    return version


def _logged_model(key: str) -> str | None:
    import mlflow

    runs = mlflow.search_runs(
        experiment_names=[EXPERIMENT],
        output_format="list",
        filter_string=f"tags.`{KEY}` = '{key}' and attributes.status = 'FINISHED'",
    )
    uris = [r.data.tags.get("kocap.model_uri") for r in runs if r.data.tags.get("kocap.model_uri")]
    return uris[0] if uris else None


def log_model(cfg: Config, root: Path, metrics: dict, hashes: dict, key: str) -> str:
    import mlflow

    tags = {**git_state(root), **aihub_snapshot(root)}
    with mlflow_run(cfg, "register", root), tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({**tags, KEY: key})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_dict({"dvc": hashes, **tags}, "lineage.json")
        for name, path in DATASETS.items():
            mlflow.log_input(_dataset(root, name, path, hashes.get(path, "unknown")), context="training")
        config, base = Path(tmp) / "config.json", Path(tmp) / "base_ref.json"
        config.write_text(served_config(cfg, metrics).model_dump_json(by_alias=True), encoding="utf-8")
        base.write_text(json.dumps(base_ref.reference(cfg, root, hashes)), encoding="utf-8")
        from . import pyfunc_model

        # the base is not copied: the version points at it by DVC hash (base_ref.py)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=pyfunc_model.__file__,
            artifacts={"adapter": str(trained_adapter(cfg, root)), "config": str(config), "base_ref": str(base)},
            pip_requirements=serving_requirements(),
        )
        mlflow.set_tag("kocap.model_uri", info.model_uri)
    return info.model_uri


def stage2_tag(cfg: Config, root: Path) -> str:
    """The version's `stage2` tag: QLoRA's steps, or zero-shot (the base measured as it is)."""
    report = json.loads((root / paths.FINETUNE_REPORT).read_text(encoding="utf-8"))
    if not cfg.stage2.enabled:
        return f"skipped: zero-shot (identity LoRA, {report['projector']} projector)"
    return f"QLoRA, {report['steps']} steps on {report['samples']} clips"


def prefer_tag(cfg: Config, root: Path) -> str:
    """The version's `prefer` tag: whether DPO ran after stage 2, and on how many pairs."""
    if not cfg.prefer.enabled:
        return "off (stage 2's adapter)"
    report = json.loads((root / paths.PREFER_REPORT).read_text(encoding="utf-8"))
    video = f", video term {cfg.prefer.video_weight}" if cfg.prefer.video_weight else ""
    return f"DPO on {report['pairs']} pairs (beta {cfg.prefer.beta}{video}, {report['steps']} steps)"


def serving_requirements() -> list[str] | None:
    """kocap's own dependencies pinned to the versions installed here. Given to `log_model`, so MLflow does
    not load the model in a subprocess at every registration to infer them (the pyfunc imports kocap).
    None (MLflow infers them) where kocap runs from a source tree that was never installed."""
    import importlib.metadata as md
    import re

    try:
        specs = md.requires("kocap") or []
    except md.PackageNotFoundError:
        return None
    pinned = []
    for spec in specs:
        if "extra ==" in spec:
            continue
        name = re.match(r"[A-Za-z0-9_.-]+", spec).group(0)
        pinned.append(f"{name}=={md.version(name).split('+')[0]}")  # torch 2.13.0+cpu: any build of 2.13.0
    return pinned


def stage1_tag(cfg: Config) -> str:
    reason = stage1_skip_reason(cfg.model.chosen, cfg.model.preset)
    if reason:
        return f"skipped: {reason}"
    return "aligned" if cfg.stage1.enabled else "skipped (stage 2 started from the assembled projector)"


def complete(client, cfg: Config, root: Path, version, metrics: dict, validation: dict, hashes: dict) -> None:
    """Tags, lineage, the challenger alias, the gate's decision, then `complete`: each step idempotent."""
    name, number = cfg.registry.model_name, version.version
    run_id = client.get_run(_run_of(client, version)).info.run_id
    tags = {
        **git_state(root),
        **aihub_snapshot(root),
        **{f"dvc.{p}": h for p, h in hashes.items() if p in (*DATASETS.values(), paths.FINETUNE, paths.PREFER)},
        "metric.primary": str(metrics["primary"]),
        "run_id": run_id,
        "base.md5": hashes[paths.BASE],
        "stage1": stage1_tag(cfg),
        "stage2": stage2_tag(cfg, root),
        "prefer": prefer_tag(cfg, root),
        "family": family(cfg.model.chosen.family).tag,
        "preset": cfg.model.preset,
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, number, key, value)
    client.set_registered_model_alias(name, "challenger", number)
    champion = current_champion(client, name)
    step = pending_decision(client.get_model_version(name, number).tags, number, champion)
    if step == "gate":
        comparison = (
            None
            if champion is None
            else compare_with_champion(cfg, root, champion, hashes, int(metrics["max_new_tokens"]))
        )
        promote, reasons = gate(metrics, validation, comparison, cfg, lost=lost_data(root))
        for key, value in (comparison.tags() if comparison else {}).items():
            client.set_model_version_tag(name, number, key, value)
        decide(client, name, number, promote, reasons, against=str(champion.version) if champion else NO_CHAMPION)
    elif step == "apply":
        client.set_registered_model_alias(name, "champion", number)
    client.set_model_version_tag(name, number, STATE, "complete")


NO_CHAMPION = "none"


def pending_decision(tags: dict, number, champion) -> str:
    """What completing a registration still has to do: "gate" (no decision yet, or one taken against a
    champion that is no longer the champion: another run or a manual promotion came in between), "apply"
    (a promotion decided against today's champion, killed before the alias moved) or "done"."""
    now = str(champion.version) if champion else NO_CHAMPION
    decided = tags.get("kocap.decision")
    if decided is None or tags.get("kocap.judged_against") != now:
        return "done" if now == str(number) else "gate"
    return "apply" if decided == "champion" else "done"


def _run_of(client, version) -> str:
    if version.run_id:
        return version.run_id
    raise RegistryError(f"model version {version.version} has no run: it was not registered by kocap")


def report_of(version) -> dict:
    tags = version.tags
    return {
        "model": version.name,
        "version": int(version.version),
        "promoted": tags.get("kocap.decision") == "champion",
        "reasons": reasons_of(tags),
        "comparison": {k.removeprefix("gate."): v for k, v in tags.items() if k.startswith("gate.")} or None,
    }


def reasons_of(tags: dict) -> list[str]:
    """The gate's reasons as a list: from the JSON tag (a reason may itself hold "; "), else the readable one."""
    if "kocap.reasons_json" in tags:
        return json.loads(tags["kocap.reasons_json"])
    return [r for r in tags.get("kocap.reasons", "").split("; ") if r]


def served_config(cfg: Config, metrics: dict) -> Config:
    """The config the served model captions with: the generation budget evaluation resolved (`auto`)."""
    served = cfg.model_copy(deep=True)
    served.eval.max_new_tokens = int(metrics["max_new_tokens"])
    return served


def _dataset(root: Path, name: str, path: str, digest: str):
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    source = HTTPDatasetSource(url=(root / path).resolve().as_uri())
    return MetaDataset(source=source, name=name, digest=digest[:36])


def _not_found(exc) -> bool:
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc))


def current_champion(client, name: str):
    """The champion version; None only when there is none. A registry that cannot be read fails the stage
    (a transient error must never look like "no champion": that would crown any challenger)."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, "champion")
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise RegistryError(f"could not read the champion of {name!r} from MLflow: {exc.message}") from exc
    if not usable(champion):
        raise RegistryError(
            f"the champion alias of {name!r} points at version {champion.version}, whose registration "
            f"never completed: promote a complete version with `kocap promote N --force --reason ...`"
        )
    return champion


def usable(version) -> bool:
    """Complete (or registered before kocap tracked completeness, with its metric tag)."""
    state = version.tags.get(STATE)
    return state == "complete" or (state is None and "metric.primary" in version.tags)


def compare_with_champion(cfg: Config, root: Path, champion, hashes: dict, max_new_tokens: int):
    """The champion and the challenger scored on the same, current validation clips, the champion
    captioning with the challenger's generation budget."""
    import pandas as pd

    from ..data.rows import split_rows
    from .champion import champion_captions
    from .gate import compare

    val = split_rows(root, "val")
    ours = pd.read_parquet(root / paths.PREDICTIONS).set_index("sample_id").loc[val["sample_id"], "prediction"]
    val_set = validation_set(root, val, hashes)
    theirs = champion_captions(cfg, root, champion, val, val_set, max_new_tokens)
    return compare(
        [[c] for c in val["caption_ko"]], ours.tolist(), theirs, cfg.eval.primary_metric, champion.version, val_set
    )


def validation_set(root: Path, val, hashes: dict | None = None) -> str:
    """The identity of a validation set: its clips, their references and the frames they were cut to."""
    frames = (hashes if hashes is not None else dvc_hashes(root)).get(paths.FRAMES)
    payload = [val["sample_id"].tolist(), val["caption_ko"].tolist(), frames]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()[:16]


def decide(
    client, name: str, version: str, promote: bool, reasons: list[str], manual: bool = False, against: str = ""
) -> None:
    """Reasons, the champion it was judged against, then the decision tag, then the alias: a rerun after a
    kill between them applies the decision only while that champion still holds (pending_decision)."""
    client.set_model_version_tag(name, version, "kocap.reasons", "; ".join(reasons))  # for people (MLflow UI)
    client.set_model_version_tag(name, version, "kocap.reasons_json", json.dumps(reasons, ensure_ascii=False))
    client.set_model_version_tag(name, version, "kocap.manual_override", str(manual).lower())
    client.set_model_version_tag(name, version, "kocap.judged_against", against)
    client.set_model_version_tag(name, version, "kocap.decision", "champion" if promote else "challenger")
    faults.point("register.decided")
    if promote:
        client.set_registered_model_alias(name, "champion", version)


def force_promote(name: str, version: str, reason: str) -> None:
    """`kocap promote VERSION --force --reason TEXT`: the logged manual override (complete versions only)."""
    from mlflow import MlflowClient

    if not reason.strip():
        raise ValueError("a manual promotion needs --reason")
    client = MlflowClient()
    target = client.get_model_version(name, version)
    if not usable(target):
        raise RegistryError(
            f"version {version} of {name!r} is incomplete (its registration was interrupted); run "
            f"`kocap run` (or `kocap stage register`) to complete it before promoting it"
        )
    decide(client, name, version, True, [f"manual override: {reason}"], manual=True)
