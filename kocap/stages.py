"""The stage table: the one place that says what each stage reads and writes.

`dvc.yaml` is generated from it (`kocap dvc-yaml > dvc.yaml`; a test checks they agree) and the
Prefect tasks are built from it, so `dvc repro` and the lifecycle flow cannot drift apart.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import yaml

from .aihub.client import ApiKey
from .config import Config


@dataclass(frozen=True)
class Stage:
    name: str
    run: str                       # "module:function", called as fn(cfg, root, env)
    deps: tuple[str, ...]          # files and folders (code included) whose content it depends on
    params: tuple[str, ...]        # params.yaml sections or keys
    outs: tuple[str, ...]
    persist: tuple[str, ...] = ()  # outs kept before a re-run (append-only raw data)
    metrics: tuple[str, ...] = ()  # small json reports kept in git, not the DVC cache
    plots: tuple[str, ...] = ()    # images (loss curves) kept in git
    retries: int = 0               # Prefect retries (network stages)


@dataclass
class RunEnv:
    """What a stage may take from outside the params: the AI-Hub key and server address.

    Built only by entry points (the CLI, the flows) from their environment; the library never reads
    the environment itself. The key is looked up only when a stage asks for it.
    """

    environ: Mapping[str, str] = field(default_factory=dict)
    secret_block: str = "aihub-apikey"
    track: bool = True  # MLflow tracking of the training stages (off only for the bare-machine GPU check)

    @classmethod
    def from_environ(cls) -> "RunEnv":
        return cls(dict(os.environ))

    def aihub_key(self) -> ApiKey:
        """AIHUB_APIKEY, else the Prefect Secret block; MissingKeyError when neither has it."""
        return ApiKey(self.environ.get("AIHUB_APIKEY") or _prefect_secret(self.secret_block) or "")

    def aihub_base_url(self) -> str | None:
        return self.environ.get("AIHUB_BASE_URL") or None


def _prefect_secret(name: str) -> str | None:
    """The key from a Prefect Secret block, if Prefect has one saved under `name`."""
    try:
        from prefect.blocks.system import Secret

        return Secret.load(name, _sync=True).get()
    except Exception:  # no server, no block: the key is simply absent
        return None


STAGES: tuple[Stage, ...] = (
    Stage(
        name="ingest",
        run="kocap.data.ingest:run",
        deps=("kocap/aihub", "kocap/sample", "kocap/data/ingest.py", "kocap/data/images.py"),
        params=("data",),
        outs=("data/raw", "data/manifest.parquet", "data/images.parquet", "data/rejects/ingest.parquet"),
        persist=("data/raw",),
        metrics=("reports/ingest.json",),
        retries=2,
    ),
    Stage(
        name="validate",
        run="kocap.data.validate:run",
        deps=("data/manifest.parquet", "data/images.parquet", "data/raw", "kocap/data/validate.py",
              "kocap/data/video.py"),
        params=("validate",),
        outs=("data/validated", "data/rejects/validate.parquet", "reports/validate"),
        metrics=("reports/validate.json",),
    ),
    Stage(
        name="frames",
        run="kocap.data.frames:run",
        deps=("data/validated", "data/raw", "kocap/data/frames.py", "kocap/data/video.py",
              "kocap/model/preprocess.py"),
        params=("frames.num_frames", "frames.short_clip", "frames.shard_size", "model.preset", "model.presets",
                "validate.max_pixels"),
        outs=("data/frames", "data/rejects/frames.parquet"),
        persist=("data/frames",),  # finished shards survive a crash; the stage resumes from them
        metrics=("reports/frames.json",),
    ),
    Stage(
        name="assemble",
        run="kocap.train.assemble:run",
        deps=("data/validated", "kocap/model", "kocap/train/assemble.py"),
        params=("model", "frames.num_frames"),
        outs=("models/base",),
        metrics=("reports/assemble.json",),
    ),
    Stage(
        name="align",
        run="kocap.train.align:run",
        deps=("models/base", "data/validated", "data/frames", "kocap/model", "kocap/train"),
        params=("stage1", "model"),
        outs=("models/align",),
        persist=("models/align",),  # checkpoints survive a killed run; it resumes from them
        metrics=("reports/align.json",),
        plots=("reports/align_loss.png",),
    ),
    Stage(
        name="finetune",
        run="kocap.train.finetune:run",
        deps=("models/base", "models/align", "data/validated", "data/frames", "kocap/model", "kocap/train"),
        params=("stage2", "model"),
        outs=("models/finetune",),
        persist=("models/finetune",),
        metrics=("reports/finetune.json",),
        plots=("reports/finetune_loss.png",),
    ),
    Stage(
        name="evaluate",
        run="kocap.evaluate.stage:run",
        deps=("models/base", "models/finetune", "data/validated", "data/frames", "kocap/evaluate", "kocap/train",
              "kocap/model"),
        params=("eval", "model"),
        outs=("reports/predictions.parquet", "reports/eval.html"),
        metrics=("reports/metrics.json",),
    ),
    Stage(
        name="register",
        run="kocap.registry.register:run",
        deps=("reports/metrics.json", "reports/validate.json", "models/base", "models/finetune", "kocap/registry",
              "kocap/evaluate/placement.py", "kocap/evaluate/metrics.py"),
        params=("registry", "eval.primary_metric"),
        outs=(),
        metrics=("reports/register.json",),
    ),
)


def get(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def run_stage(name: str, cfg: Config, root: Path, env: RunEnv):
    module, _, fn = get(name).run.partition(":")
    return getattr(importlib.import_module(module), fn)(cfg, root, env)


def dvc_yaml() -> str:
    """The text of dvc.yaml for the stage table."""
    stages = {}
    for s in STAGES:
        outs = [{o: {"persist": True}} if o in s.persist else o for o in s.outs]
        entry = {"cmd": f"kocap stage {s.name}", "deps": list(s.deps), "params": list(s.params)}
        if outs:
            entry["outs"] = outs
        if s.metrics:
            entry["metrics"] = [{m: {"cache": False}} for m in s.metrics]
        if s.plots:
            entry["plots"] = [{p: {"cache": False}} for p in s.plots]
        stages[s.name] = entry
    head = "# Generated from kocap/stages.py by `kocap dvc-yaml > dvc.yaml`; edit the stage table, not this file.\n"
    return head + yaml.safe_dump({"stages": stages}, sort_keys=False, allow_unicode=True)
