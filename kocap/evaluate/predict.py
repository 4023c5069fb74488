"""Validation captions for the evaluate stage, made in shards so any executor can make them.

    jobs = pending_shards(cfg, root)      # plain dicts: Prefect tasks, a Dask cluster or a loop run them
    run_job(jobs[0])                      # one shard -> .kocap-cache/eval-v3/<key>.json
    predictions, cut, shuffled, budget = predict(cfg, root)   # collects (and makes what is missing)

Captions are made in shards of SHARD clips, each with its own seed and cached by content, so a
fan-out and a plain run produce the same captions, and the plain run then only collects. Each shard
is made with the clips' own videos ("model") or with shuffled videos ("shuffled", the control).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..config import Config
from ..data.rows import derangement, split_rows
from ..io import write_json
from ..model import runtime
from ..model.captioner import Captioner, generation_budget, trained_adapter
from ..model.features import FeatureStore
from ..model.text import load_tokenizer
from .metrics import require

SHARD = 16  # clips per evaluation shard (= one generation batch, so sharding never changes a caption)
CACHE = ".kocap-cache/eval-v3"  # v2: shards hold captions and cut-by-budget flags; v3: the control is a derangement


def _order(cfg: Config, n: int, which: str) -> np.ndarray:
    """Which validation clip's video each caption is made from: its own, or another clip's (the control)."""
    return derangement(n, cfg.eval.seed) if which == "shuffled" else np.arange(n)


def predict(cfg: Config, root: Path) -> tuple[list[str], list[bool], list[str], int]:
    """Validation captions with the true videos (and cut flags), with shuffled videos, and the budget."""
    budget = resolved_budget(cfg, root)
    captioner = Captioner.load(root / paths.BASE, trained_adapter(cfg, root), cfg, budget)
    val = split_rows(root, "val")
    store = FeatureStore(captioner.model, root)
    predictions, cut = _captions(captioner, store, cfg, root, val, "model", budget)
    shuffled, _ = _captions(captioner, store, cfg, root, val, "shuffled", budget)
    return predictions, cut, shuffled, budget


def resolved_budget(cfg: Config, root: Path) -> int:
    """eval.max_new_tokens, with `auto` resolved from the training captions (see generation_budget)."""
    if cfg.eval.max_new_tokens != "auto":
        return int(cfg.eval.max_new_tokens)
    tokenizer = load_tokenizer(str(root / paths.BASE))
    return generation_budget(tokenizer, split_rows(root, "train")["caption_ko"].tolist())


def _captions(
    captioner: Captioner, store: FeatureStore, cfg: Config, root: Path, val: pd.DataFrame, which: str, budget: int
) -> tuple[list[str], list[bool]]:
    """Captions and cut-by-budget flags, shard by shard, from the cache where a shard was made already.
    Features are read per shard: 71849's validation split would be ~5 GB of them at once."""
    order, out, cut = _order(cfg, len(val), which), [], []
    for start in range(0, len(val), SHARD):
        path = _shard_path(cfg, root, val, which, start, budget)
        if not path.exists():
            _make_shard(captioner, store.get(val.iloc[order[start : start + SHARD]]), cfg, start, path)
        shard = json.loads(path.read_text(encoding="utf-8"))
        out, cut = out + shard["captions"], cut + shard["cut"]
    return out, cut


def _make_shard(captioner: Captioner, features, cfg: Config, start: int, path: Path) -> None:
    captions, cut = captioner.caption_and_cut(features, seed=cfg.eval.seed + start)
    write_json(path, {"captions": captions, "cut": cut})


def model_stamps(root: Path, *folders: Path) -> list:
    """(path, size, mtime) of the model files: a retrained or reassembled model changes them."""
    files = [p for d in folders if d.exists() for p in sorted(d.rglob("*")) if p.is_file()]
    return [[p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _captioner_stamps(cfg: Config, root: Path) -> list:
    """The stamps of the base and of the adapter evaluation takes (stage 2's or the prefer stage's)."""
    return model_stamps(root, root / paths.BASE, trained_adapter(cfg, root))


def _shard_path(cfg: Config, root: Path, val: pd.DataFrame, which: str, start: int, budget: int) -> Path:
    """Keyed by the model files, the eval and model params, the resolved budget and the clips."""
    blob = json.dumps(
        [
            _captioner_stamps(cfg, root),
            cfg.section("eval"),
            cfg.section("model"),
            val["sample_id"].tolist(),
            which,
            start,
            budget,
        ],
        sort_keys=True,
        ensure_ascii=False,
    )
    return root / CACHE / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"


def pending_shards(cfg: Config, root: Path) -> list[dict]:
    """Caption shards not made yet, as plain jobs for `run_job` on any executor."""
    require(cfg.eval.primary_metric)  # before any captioning: a run that cannot be scored stops now
    val, budget = split_rows(root, "val"), resolved_budget(cfg, root)
    return [
        {"root": str(root), "which": which, "start": start, "budget": budget}
        for which in ("model", "shuffled")
        for start in range(0, len(val), SHARD)
        if not _shard_path(cfg, root, val, which, start, budget).exists()
    ]


def run_job(job: dict) -> str:
    """Make one caption shard (loads the model: each job can run on another worker)."""
    from ..config import load_config

    root = Path(job["root"])
    cfg = load_config(root / "params.yaml")
    runtime.share_cores(job.get("workers", 1))  # workers x threads <= cores (benchmarks/shard_threads.py)
    captioner = _shared_captioner(root, cfg, job["budget"])
    val = split_rows(root, "val")
    rows = val.iloc[_order(cfg, len(val), job["which"])[job["start"] : job["start"] + SHARD]]
    features = FeatureStore(captioner.model, root).get(rows)
    path = _shard_path(cfg, root, val, job["which"], job["start"], job["budget"])
    _make_shard(captioner, features, cfg, job["start"], path)
    return path.name


_LOADED: dict = {}
_LOADING = threading.Lock()


def _shared_captioner(root: Path, cfg: Config, budget: int) -> Captioner:
    """One model per process for every shard job it runs. Loading is serialised: from_pretrained
    patches torch globally (meta device) while it builds, so two threads loading at once break."""
    key = json.dumps(
        [
            str(root),
            cfg.section("model"),
            cfg.section("eval"),
            _captioner_stamps(cfg, root),
            budget,
        ],
        sort_keys=True,
    )
    with _LOADING:
        if key not in _LOADED:
            _LOADED.clear()
            _LOADED[key] = Captioner.load(root / paths.BASE, trained_adapter(cfg, root), cfg, budget)
        return _LOADED[key]
