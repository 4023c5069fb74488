"""The evaluate stage: captions for the validation split, scored on Korean morphemes.

    kocap stage evaluate     # -> reports/metrics.json, reports/predictions.parquet, reports/eval.html

Same frames, features, prompt and chat template as training. Besides BLEU/METEOR/ROUGE-L/CIDEr-D:
diversity (unique share, distinct-1/2) to catch mode collapse, grounding (primary metric with the
true videos minus with shuffled videos) to prove captions depend on the video, and the
most-frequent-caption baseline scored alongside.
"""
from __future__ import annotations

import base64
import html
import io
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

METRICS = "reports/metrics.json"
PREDICTIONS = "reports/predictions.parquet"
HTML = "reports/eval.html"


def run(cfg: Config, root: Path, env=None) -> dict:
    captioner = Captioner.load(root / BASE, root / FINETUNE / "adapter", cfg)
    val, train = training_rows(root, "val"), training_rows(root, "train")
    features = FeatureStore(captioner.model, root).get(val)
    shuffle = np.random.default_rng(cfg.eval.seed).permutation(len(val))
    predictions = captioner.caption_features(features, seed=cfg.eval.seed)
    shuffled = captioner.caption_features(features[shuffle], seed=cfg.eval.seed)
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
