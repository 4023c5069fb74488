"""The evaluate stage: captions for the validation split, scored on Korean morphemes.

    kocap stage evaluate     # -> reports/metrics.json, reports/predictions.parquet, reports/eval.html

Same frames, features, prompt and chat template as training. The primary metric (METEOR by default)
with BLEU/ROUGE-L/CIDEr-D as secondary; sentence-level scores; diversity (unique share, distinct-1/2)
to catch mode collapse; grounding (primary metric with the true videos minus with shuffled videos) to
prove captions depend on the video; the most-frequent-caption baseline scored alongside; and on the
embedded sample, attribute accuracy (does the caption state the object, colour, count, ... drawn).
The report places the score beside those and the published baseline (placement.py).

Captions are made in shards of SHARD clips, each with its own seed and cached by content in
`.kocap-cache/eval/`, so a fan-out (`pending_shards` + `run_job` on Prefect tasks or Dask) and a
plain run produce the same captions, and the plain run then only collects.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..data.frames import open_frames
from ..io import write_json, write_parquet
from ..train.assemble import OUT as BASE
from ..train.features import FeatureStore
from ..train.finetune import OUT as FINETUNE, training_rows
from ..train.tracking import mlflow_run
from ..model.text import load_tokenizer
from ..sample.facts import attribute_accuracy
from .captioner import Captioner, generation_budget
from .metrics import caption_metrics, diversity, most_frequent_caption, require, sentence_scores
from .placement import placement, placement_html

log = logging.getLogger(__name__)
SHARD = 16  # clips per evaluation shard (= one generation batch, so sharding never changes a caption)
CACHE = ".kocap-cache/eval-v2"  # v2: shards hold captions and cut-by-budget flags
METRICS = "reports/metrics.json"
PREDICTIONS = "reports/predictions.parquet"
HTML = "reports/eval.html"


def run(cfg: Config, root: Path, env=None) -> dict:
    require(cfg.eval.primary_metric)
    val, train = training_rows(root, "val"), training_rows(root, "train")
    predictions, cut, shuffled, budget = predict(cfg, root)
    refs = [[c] for c in val["caption_ko"]]
    baseline = [most_frequent_caption(train["caption_ko"].tolist())] * len(val)
    metrics = {**score(refs, predictions, shuffled, baseline, cfg.eval.primary_metric,
                       facts=cfg.data.source == "sample"),
               "max_new_tokens": budget, "cut_by_budget": int(sum(cut)), "cut_share": sum(cut) / max(1, len(cut))}
    if sum(cut):
        log.warning("%d of %d captions were cut by the generation budget (%d new tokens)", sum(cut), len(cut), budget)
    table = val[["sample_id", "caption_ko"]].rename(columns={"caption_ko": "reference"}).assign(
        prediction=predictions, prediction_shuffled_video=shuffled)
    write_json(root / METRICS, metrics)
    write_parquet(table, root / PREDICTIONS)
    (root / HTML).write_text(report_html(root, val, table, metrics, cfg.eval.report_samples), encoding="utf-8")
    log_to_mlflow(cfg, root, metrics)
    return metrics


def _order(cfg: Config, n: int, which: str) -> np.ndarray:
    """Which validation clip's video each caption is made from: its own, or a shuffled one (the control)."""
    return np.random.default_rng(cfg.eval.seed).permutation(n) if which == "shuffled" else np.arange(n)


def predict(cfg: Config, root: Path) -> tuple[list[str], list[bool], list[str], int]:
    """Validation captions with the true videos (and cut flags), with shuffled videos, and the budget."""
    budget = resolved_budget(cfg, root)
    captioner = Captioner.load(root / BASE, root / FINETUNE / "adapter", cfg, budget)
    val = training_rows(root, "val")
    features = FeatureStore(captioner.model, root).get(val)
    predictions, cut = _captions(captioner, features, cfg, root, val, "model", budget)
    shuffled, _ = _captions(captioner, features, cfg, root, val, "shuffled", budget)
    return predictions, cut, shuffled, budget


def resolved_budget(cfg: Config, root: Path) -> int:
    """eval.max_new_tokens, with `auto` resolved from the training captions (see generation_budget)."""
    if cfg.eval.max_new_tokens != "auto":
        return int(cfg.eval.max_new_tokens)
    tokenizer = load_tokenizer(str(root / BASE))
    return generation_budget(tokenizer, training_rows(root, "train")["caption_ko"].tolist())


def _captions(captioner: Captioner, features, cfg: Config, root: Path, val: pd.DataFrame, which: str,
              budget: int) -> tuple[list[str], list[bool]]:
    """Captions and cut-by-budget flags, shard by shard, from the cache where a shard was made already."""
    order, out, cut = _order(cfg, len(val), which), [], []
    for start in range(0, len(val), SHARD):
        path = _shard_path(cfg, root, val, which, start, budget)
        if not path.exists():
            _make_shard(captioner, features[order[start : start + SHARD]], cfg, start, path)
        shard = json.loads(path.read_text(encoding="utf-8"))
        out, cut = out + shard["captions"], cut + shard["cut"]
    return out, cut


def _make_shard(captioner: Captioner, features, cfg: Config, start: int, path: Path) -> None:
    captions, cut = captioner.caption_and_cut(features, seed=cfg.eval.seed + start)
    write_json(path, {"captions": captions, "cut": cut})


def _model_stamps(root: Path) -> list:
    """(path, size, mtime) of the model files: a retrained or reassembled model changes them."""
    files = [p for d in (root / BASE, root / FINETUNE / "adapter") if d.exists() for p in sorted(d.rglob("*"))
             if p.is_file()]
    return [[p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _shard_path(cfg: Config, root: Path, val: pd.DataFrame, which: str, start: int, budget: int) -> Path:
    """Keyed by the model files, the eval and model params, the resolved budget and the clips."""
    blob = json.dumps([_model_stamps(root), cfg.section("eval"), cfg.section("model"), val["sample_id"].tolist(),
                       which, start, budget], sort_keys=True, ensure_ascii=False)
    return root / CACHE / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"


def pending_shards(cfg: Config, root: Path) -> list[dict]:
    """Caption shards not made yet, as plain jobs for `run_job` on any executor."""
    require(cfg.eval.primary_metric)  # before any captioning: a run that cannot be scored stops now
    val, budget = training_rows(root, "val"), resolved_budget(cfg, root)
    return [{"root": str(root), "which": which, "start": start, "budget": budget}
            for which in ("model", "shuffled") for start in range(0, len(val), SHARD)
            if not _shard_path(cfg, root, val, which, start, budget).exists()]


def run_job(job: dict) -> str:
    """Make one caption shard (loads the model: each job can run on another worker)."""
    from ..config import load_config

    root = Path(job["root"])
    cfg = load_config(root / "params.yaml")
    captioner = _shared_captioner(root, cfg, job["budget"])
    val = training_rows(root, "val")
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
    key = json.dumps([str(root), cfg.section("model"), cfg.section("eval"), _model_stamps(root), budget],
                     sort_keys=True)
    with _LOADING:
        if key not in _LOADED:
            _LOADED.clear()
            _LOADED[key] = Captioner.load(root / BASE, root / FINETUNE / "adapter", cfg, budget)
        return _LOADED[key]


def score(refs, predictions, shuffled, baseline, primary: str, facts: bool = False) -> dict:
    """The model's metrics, its shuffled-video control and the most-frequent baseline on the primary metric;
    with `facts` (the embedded sample), attribute accuracy of all three."""
    model = caption_metrics(refs, predictions)
    control = caption_metrics(refs, shuffled, meteor=primary == "meteor")
    base = caption_metrics(refs, baseline, meteor=primary == "meteor")
    out = {**model, **diversity(predictions), **sentence_scores([r[0] for r in refs], predictions),
           "primary_metric": primary, "primary": model[primary],
           "grounding": model[primary] - control[primary], f"shuffled_{primary}": control[primary],
           f"baseline_most_frequent_{primary}": base[primary], "samples": len(predictions)}
    return {**out, **(fact_scores([r[0] for r in refs], predictions, shuffled, baseline) if facts else {})}


def fact_scores(references: list[str], predictions: list[str], shuffled: list[str], baseline: list[str]) -> dict:
    """Attribute accuracy (sample/facts.py): per attribute for the model; the mean for it and both baselines."""
    ours = attribute_accuracy(references, predictions)
    return {**{f"attribute_{k}": v for k, v in ours.items() if k != "mean"}, "attribute_accuracy": ours["mean"],
            "shuffled_attribute_accuracy": attribute_accuracy(references, shuffled)["mean"],
            "baseline_most_frequent_attribute_accuracy": attribute_accuracy(references, baseline)["mean"]}


def log_to_mlflow(cfg: Config, root: Path, metrics: dict) -> None:
    import mlflow

    from .metrics import PUBLISHED_BASELINE

    with mlflow_run(cfg, "evaluate", root):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.set_tag("published_baseline", f"{PUBLISHED_BASELINE['label']}: {PUBLISHED_BASELINE['score']}")
        mlflow.log_text(placement_html(placement(metrics)), "placement.html")
        for path in (METRICS, PREDICTIONS, HTML):
            mlflow.log_artifact(str(root / path))


def _strip(frames: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.concatenate(list(frames), axis=1)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def report_html(root: Path, val: pd.DataFrame, table: pd.DataFrame, metrics: dict, n: int) -> str:
    """One self-contained page: the metric table, then each clip's frame strip, reference and prediction."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" if isinstance(v, float) else
                   f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in metrics.items())
    clips = []
    for (_, idx), (_, row) in list(zip(val.iterrows(), table.iterrows()))[:n]:
        clips.append(f"<h3>{html.escape(row['sample_id'])}</h3><img src='data:image/png;base64,"
                     f"{_strip(np.asarray(open_frames(root, idx)))}'><p><b>reference</b> {html.escape(row['reference'])}</p>"
                     f"<p><b>prediction</b> {html.escape(row['prediction'])}</p>")
    return (f"<!doctype html><meta charset='utf-8'><title>kocap evaluation</title><h1>kocap evaluation</h1>"
            f"{placement_html(placement(metrics))}<h2>All metrics</h2>"
            f"<table border=1 cellpadding=4>{rows}</table>{''.join(clips)}")
