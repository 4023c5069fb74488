"""The stage table: the one place that says what each stage reads, writes and how it runs.

`dvc.yaml` is generated from it (`kocap dvc-yaml > dvc.yaml`; a test checks they agree) and the
Prefect tasks (tasks/stage_tasks.py) and shard fan-out (tasks/fanout.py) are built from it, so
`dvc repro` and the lifecycle flow cannot drift apart. Paths come from `kocap/paths.py`; a stage's
code deps are derived from what its module really imports (`code_deps`), never listed by hand.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from . import paths as p
from .config import Config
from .env import RunEnv

PACKAGE = Path(__file__).resolve().parent
# Imported by stages but shaping no output (and not followed further): params are DVC params, paths are
# the table itself; io writes files, faults injects test faults, env passes the key through, ui checks
# whether a process is alive.
NOT_CODE_DEPS = {
    "kocap/__init__.py",
    "kocap/config.py",
    "kocap/io.py",
    "kocap/faults.py",
    "kocap/paths.py",
    "kocap/env.py",
    "kocap/ui.py",
}


@dataclass(frozen=True)
class Stage:
    name: str
    run: str  # "module:function", called as fn(cfg, root, env) -> dict
    inputs: tuple[str, ...]  # data deps: other stages' outputs
    params: tuple[str, ...]  # params.yaml sections or keys
    outs: tuple[str, ...]
    persist: tuple[str, ...] = ()  # outs kept before a re-run (append-only raw data)
    metrics: tuple[str, ...] = ()  # small json reports kept in git, not the DVC cache
    plots: tuple[str, ...] = ()  # images (loss curves) kept in git
    retries: int = 0  # Prefect retries of the stage task (network stages)
    shards: str = ""  # module with pending_shards(cfg, root) and run_job(job): fanned out by the flow
    shard_retries: int = 1  # Prefect retries of one shard task
    pool: str = ""  # ops key naming a work pool (GPU workers) the stage may run on instead
    pool_retries: int = 2  # a killed worker is a crashed child run: each retry resumes from checkpoints

    @property
    def module(self) -> str:
        return self.run.partition(":")[0]

    @property
    def deps(self) -> tuple[str, ...]:
        """Data inputs, then the code the stage imports (and its shard module)."""
        return self.inputs + code_deps(self.module, self.shards)


STAGES: tuple[Stage, ...] = (
    Stage(
        name="ingest",
        run="kocap.data.ingest:run",
        inputs=(),
        params=("data",),
        outs=(p.RAW, p.MANIFEST, p.IMAGE_MANIFEST, p.INGEST_REJECTS),
        persist=(p.RAW,),
        metrics=(p.INGEST_REPORT,),
        retries=2,
    ),
    Stage(
        name="validate",
        run="kocap.data.validate:run",
        inputs=(p.MANIFEST, p.IMAGE_MANIFEST, p.RAW),
        params=("validate",),
        outs=(p.VALIDATED, p.VALIDATE_REJECTS, p.VALIDATE_DOCS),
        metrics=(p.VALIDATE_REPORT,),
    ),
    Stage(
        name="frames",
        run="kocap.data.frames:run",
        inputs=(p.VALIDATED, p.RAW),
        params=(
            "frames.num_frames",
            "frames.short_clip",
            "frames.shard_size",
            "model.preset",
            "model.presets",
            "validate.max_pixels",
        ),
        outs=(p.FRAMES, p.FRAMES_REJECTS),
        persist=(p.FRAMES,),  # finished shards survive a crash; the stage resumes from them
        metrics=(p.FRAMES_REPORT,),
        shards="kocap.data.frames",
    ),
    Stage(
        name="assemble",
        run="kocap.train.assemble:run",
        inputs=(p.VALIDATED, p.FRAMES),  # FRAMES: the tiny tower's pre-training frames
        params=("model", "frames.num_frames"),
        outs=(p.BASE,),
        metrics=(p.ASSEMBLE_REPORT,),
    ),
    Stage(
        name="align",
        run="kocap.train.align:run",
        inputs=(p.BASE, p.VALIDATED, p.FRAMES),
        params=("stage1", "model"),
        outs=(p.ALIGN,),
        persist=(p.ALIGN,),  # checkpoints survive a killed run; it resumes from them
        metrics=(p.ALIGN_REPORT,),
        plots=(p.ALIGN_PLOT,),
    ),
    Stage(
        name="finetune",
        run="kocap.train.finetune:run",
        inputs=(p.BASE, p.ALIGN, p.VALIDATED, p.FRAMES),
        params=("stage2", "model"),
        outs=(p.FINETUNE,),
        persist=(p.FINETUNE,),
        metrics=(p.FINETUNE_REPORT,),
        plots=(p.FINETUNE_PLOT,),
        pool="finetune_pool",
    ),
    Stage(
        name="prefer",
        run="kocap.train.prefer:run",
        inputs=(p.BASE, p.FINETUNE, p.VALIDATED, p.FRAMES),
        params=("prefer", "model", "eval.max_new_tokens", "eval.primary_metric", "data.source"),
        outs=(p.PREFER, p.PREFERENCES),
        persist=(p.PREFER,),  # checkpoints survive a killed run; it resumes from them
        metrics=(p.PREFER_REPORT,),
        plots=(p.PREFER_PLOT,),
    ),
    Stage(
        name="evaluate",
        run="kocap.evaluate.evaluation:run",
        inputs=(p.BASE, p.FINETUNE, p.PREFER, p.VALIDATED, p.FRAMES),
        params=("eval", "model", "data.source", "prefer.enabled"),
        outs=(p.PREDICTIONS, p.EVAL_HTML),
        metrics=(p.METRICS,),
        shards="kocap.evaluate.predict",
    ),
    Stage(
        name="register",
        run="kocap.registry.register:run",
        inputs=(p.METRICS, p.VALIDATE_REPORT, p.BASE, p.FINETUNE, p.PREFER),
        params=("registry", "eval.primary_metric", "prefer"),
        outs=(),
        metrics=(p.REGISTER_REPORT,),
    ),
)


@cache
def code_deps(*modules: str) -> tuple[str, ...]:
    """The kocap source files these modules import, directly or not (function-level imports included),
    as repo-relative paths; a package whose every module is imported is named as its folder."""
    seen: set[Path] = set()
    todo = [_module_file(m) for m in modules if m]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [path.parent / "__init__.py"] if path.name != "__init__.py" else []  # a package runs its __init__
        if _relative(path) not in NOT_CODE_DEPS:
            todo += [f for f in _imports(path) if f not in seen]
    files = {_relative(f) for f in seen} - NOT_CODE_DEPS
    return tuple(sorted(_fold_packages(files)))


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _module_file(module: str) -> Path:
    base = PACKAGE.parent.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _imports(path: Path) -> list[Path]:
    """The kocap modules one file imports (absolute `kocap.x` and relative `.x` / `..x` alike)."""
    package = path.parent.relative_to(PACKAGE.parent).parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                (*package[: len(package) - node.level + 1], *(node.module or "").split("."))
                if node.level
                else tuple((node.module or "").split("."))
            )
            base = tuple(x for x in base if x)
            names = [".".join((*base, a.name)) for a in node.names] + [".".join(base)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "kocap":
                continue
            for n in range(len(parts), 0, -1):  # the longest prefix that is a module (`from .x import func`)
                candidate = _module_file(".".join(parts[:n]))
                if candidate.exists():
                    found.append(candidate)
                    break
    return found


def _fold_packages(files: set[str]) -> set[str]:
    """Name a subpackage by its folder when all of its modules are in `files`."""
    out = set(files)
    for folder in {Path(f).parent for f in files if Path(f).parent != Path("kocap")}:
        members = {m.relative_to(PACKAGE.parent).as_posix() for m in (PACKAGE.parent / folder).glob("*.py")}
        if members <= files:
            out = (out - members) | {folder.as_posix()}
    return out


def get(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def run_stage(name: str, cfg: Config, root: Path, env: RunEnv) -> dict:
    stage = get(name)
    return getattr(importlib.import_module(stage.module), stage.run.partition(":")[2])(cfg, root, env)


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
            entry["plots"] = [{plot: {"cache": False}} for plot in s.plots]
        stages[s.name] = entry
    head = "# Generated from kocap/pipeline.py by `kocap dvc-yaml > dvc.yaml`; edit the stage table, not this file.\n"
    return head + yaml.safe_dump({"stages": stages}, sort_keys=False, allow_unicode=True)
