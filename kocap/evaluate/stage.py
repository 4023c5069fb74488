"""The evaluate stage: captions for the validation split, scored on Korean morphemes.

    kocap stage evaluate     # -> reports/metrics.json, reports/predictions.parquet, reports/eval.html

Same frames, features, prompt and chat template as training. Besides BLEU/METEOR/ROUGE-L/CIDEr-D:
diversity (unique share, distinct-1/2) to catch mode collapse, grounding (primary metric with the
true videos minus with shuffled videos) to prove captions depend on the video, and the
most-frequent-caption baseline scored alongside.

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
from .captioner import Captioner
from .metrics import caption_metrics, diversity, most_frequent_caption

SHARD = 16  # clips per evaluation shard (= one generation batch, so sharding never changes a caption)
CACHE = ".kocap-cache/eval"
METRICS = "reports/metrics.json"
PREDICTIONS = "reports/predictions.parquet"
HTML = "reports/eval.html"


def run(cfg: Config, root: Path, env=None) -> dict:
    captioner = Captioner.load(root / BASE, root / FINETUNE / "adapter", cfg)
    val, train = training_rows(root, "val"), training_rows(root, "train")
    features = FeatureStore(captioner.model, root).get(val)
    predictions = _captions(captioner, features, cfg, root, val, "model")
    shuffled = _captions(captioner, features, cfg, root, val, "shuffled")
    refs = [[c] for c in val["caption_ko"]]
    baseline = [most_frequent_caption(train["caption_ko"].tolist())] * len(val)
    metrics = score(refs, predictions, shuffled, baseline, cfg.eval.primary_metric)
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


def _captions(captioner: Captioner, features, cfg: Config, root: Path, val: pd.DataFrame, which: str) -> list[str]:
    order, out = _order(cfg, len(val), which), []
    for start in range(0, len(val), SHARD):
        path = _shard_path(cfg, root, val, which, start)
        if path.exists():
            out += json.loads(path.read_text(encoding="utf-8"))
            continue
        captions = captioner.caption_features(features[order[start : start + SHARD]], SHARD, cfg.eval.seed + start)
        write_json(path, captions)
        out += captions
    return out


def _model_stamps(root: Path) -> list:
    """(path, size, mtime) of the model files: a retrained or reassembled model changes them."""
    files = [p for d in (root / BASE, root / FINETUNE / "adapter") if d.exists() for p in sorted(d.rglob("*"))
             if p.is_file()]
    return [[p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _shard_path(cfg: Config, root: Path, val: pd.DataFrame, which: str, start: int) -> Path:
    """Keyed by the model files, the eval and model params and the clips."""
    blob = json.dumps([_model_stamps(root), cfg.section("eval"), cfg.section("model"), val["sample_id"].tolist(),
                       which, start], sort_keys=True, ensure_ascii=False)
    return root / CACHE / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"


def pending_shards(cfg: Config, root: Path) -> list[dict]:
    """Caption shards not made yet, as plain jobs for `run_job` on any executor."""
    val = training_rows(root, "val")
    return [{"root": str(root), "which": which, "start": start}
            for which in ("model", "shuffled") for start in range(0, len(val), SHARD)
            if not _shard_path(cfg, root, val, which, start).exists()]


def run_job(job: dict) -> str:
    """Make one caption shard (loads the model: each job can run on another worker)."""
    from ..config import load_config

    root = Path(job["root"])
    cfg = load_config(root / "params.yaml")
    captioner = _shared_captioner(root, cfg)
    val = training_rows(root, "val")
    rows = val.iloc[_order(cfg, len(val), job["which"])[job["start"] : job["start"] + SHARD]]
    features = FeatureStore(captioner.model, root).get(rows)
    path = _shard_path(cfg, root, val, job["which"], job["start"])
    write_json(path, captioner.caption_features(features, SHARD, cfg.eval.seed + job["start"]))
    return path.name


_LOADED: dict = {}
_LOADING = threading.Lock()


def _shared_captioner(root: Path, cfg: Config) -> Captioner:
    """One model per process for every shard job it runs. Loading is serialised: from_pretrained
    patches torch globally (meta device) while it builds, so two threads loading at once break."""
    key = json.dumps([str(root), cfg.section("model"), cfg.section("eval"), _model_stamps(root)], sort_keys=True)
    with _LOADING:
        if key not in _LOADED:
            _LOADED.clear()
            _LOADED[key] = Captioner.load(root / BASE, root / FINETUNE / "adapter", cfg)
        return _LOADED[key]


def score(refs, predictions, shuffled, baseline, primary: str) -> dict:
    model = caption_metrics(refs, predictions)
    control = caption_metrics(refs, shuffled, meteor=primary == "meteor")
    base = caption_metrics(refs, baseline, meteor=primary == "meteor")
    return {**model, **diversity(predictions), "primary_metric": primary, "primary": model[primary],
            "grounding": model[primary] - control[primary], f"shuffled_{primary}": control[primary],
            f"baseline_most_frequent_{primary}": base[primary], "samples": len(predictions)}


def log_to_mlflow(cfg: Config, root: Path, metrics: dict) -> None:
    import mlflow

    with mlflow_run(cfg, "evaluate", root):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
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
            f"<table border=1 cellpadding=4>{rows}</table>{''.join(clips)}")
