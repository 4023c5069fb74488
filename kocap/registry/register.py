"""The register stage: log the captioner as an MLflow pyfunc model with full lineage, register a
new version with alias `challenger`, and promote it to `champion` only through the gate.

    kocap stage register
    kocap promote VERSION --force --reason TEXT     # the logged manual override
    kocap lineage models:/kocap@champion

Gate: validation passed, the primary metric beats the current champion's by
`registry.min_improvement`, the unique-caption share is at least `registry.min_unique_share`, and
grounding is positive. The decision and its reasons are stored as version tags.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..config import Config
from ..io import write_json
from ..train.finetune import OUT as FINETUNE
from ..train.tracking import mlflow_run
from . import base_ref
from .lineage import aihub_snapshot, dvc_hashes, git_state

REPORT = "reports/register.json"
DATASETS = {"manifest": "data/manifest.parquet", "validated": "data/validated", "frames": "data/frames"}


def run(cfg: Config, root: Path, env=None) -> dict:
    import mlflow
    from mlflow import MlflowClient

    metrics = json.loads((root / "reports/metrics.json").read_text(encoding="utf-8"))
    validation = json.loads((root / "reports/validate.json").read_text(encoding="utf-8"))
    hashes = dvc_hashes(root)
    tags = {**git_state(root), **aihub_snapshot(root)}
    with mlflow_run(cfg, "register", root) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags(tags)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_dict({"dvc": hashes, **tags}, "lineage.json")
        for name, path in DATASETS.items():
            mlflow.log_input(_dataset(root, name, path, hashes.get(path, "unknown")), context="training")
        config, base = Path(tmp) / "config.json", Path(tmp) / "base_ref.json"
        config.write_text(served_config(cfg, metrics).model_dump_json(by_alias=True), encoding="utf-8")
        base.write_text(json.dumps(base_ref.reference(cfg, root, hashes)), encoding="utf-8")
        from . import pyfunc_model

        # the base is not copied: the version points at it by DVC hash (base_ref.py)
        info = mlflow.pyfunc.log_model(name="model", python_model=pyfunc_model.__file__,
                                       artifacts={"adapter": str(root / FINETUNE / "adapter"), "config": str(config),
                                                  "base_ref": str(base)})
    client = MlflowClient()
    version = mlflow.register_model(info.model_uri, cfg.registry.model_name).version
    name = cfg.registry.model_name
    client.set_registered_model_alias(name, "challenger", version)
    for key, value in {**tags, **{f"dvc.{p}": h for p, h in hashes.items() if p in DATASETS.values()},
                       "metric.primary": str(metrics["primary"]), "run_id": run.info.run_id,
                       "base.md5": hashes[base_ref.BASE]}.items():
        client.set_model_version_tag(name, version, key, value)
    promote, reasons = gate(metrics, validation, champion_metric(client, name), cfg)
    decide(client, name, version, promote, reasons)
    report = {"model": name, "version": int(version), "promoted": promote, "reasons": reasons}
    write_json(root / REPORT, report)
    return report


def served_config(cfg: Config, metrics: dict) -> Config:
    """The config the served model captions with: the generation budget evaluation resolved (`auto`)."""
    served = cfg.model_copy(deep=True)
    served.eval.max_new_tokens = int(metrics["max_new_tokens"])
    return served


def _dataset(root: Path, name: str, path: str, digest: str):
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    source = HTTPDatasetSource(url=(root / path).resolve().as_uri())
    return MetaDataset(source=source, name=name, digest=digest[:36])


def champion_metric(client, name: str) -> float | None:
    try:
        return float(client.get_model_version_by_alias(name, "champion").tags["metric.primary"])
    except Exception:  # no champion yet
        return None


def gate(metrics: dict, validation: dict, champion: float | None, cfg: Config) -> tuple[bool, list[str]]:
    """Whether a challenger becomes champion, and why (every failed condition is listed)."""
    r, reasons = cfg.registry, []
    primary, name = metrics["primary"], metrics["primary_metric"]
    if validation.get("reject_frac", 1) > cfg.validate_.max_reject_frac or 0 in validation.get("kept_by_split", {}).values():
        reasons.append("validation did not pass")
    if champion is not None and primary < champion + r.min_improvement:
        reasons.append(f"{name} {primary:.4f} does not beat the champion's {champion:.4f} by {r.min_improvement}")
    if metrics["unique_share"] < r.min_unique_share:
        reasons.append(f"unique-caption share {metrics['unique_share']:.2f} below {r.min_unique_share} (mode collapse)")
    if metrics["grounding"] <= 0:
        reasons.append(f"grounding {metrics['grounding']:.4f} is not positive: captions do not depend on the video")
    if not reasons:
        reasons.append(f"{name} {primary:.4f} " + (f"beats the champion's {champion:.4f}" if champion is not None
                                                   else "(first champion)"))
        return True, reasons
    return False, reasons


def decide(client, name: str, version: str, promote: bool, reasons: list[str], manual: bool = False) -> None:
    client.set_model_version_tag(name, version, "kocap.decision", "champion" if promote else "challenger")
    client.set_model_version_tag(name, version, "kocap.reasons", "; ".join(reasons))
    client.set_model_version_tag(name, version, "kocap.manual_override", str(manual).lower())
    if promote:
        client.set_registered_model_alias(name, "champion", version)


def force_promote(name: str, version: str, reason: str) -> None:
    """`kocap promote VERSION --force --reason TEXT`: the logged manual override."""
    from mlflow import MlflowClient

    if not reason.strip():
        raise ValueError("a manual promotion needs --reason")
    decide(MlflowClient(), name, version, True, [f"manual override: {reason}"], manual=True)

