"""The evaluate stage: captions for the validation split, scored on Korean morphemes.

    kocap stage evaluate     # -> reports/metrics.json, reports/predictions.parquet, reports/eval.html

Same frames, features, prompt and chat template as training. The primary metric (METEOR by default)
with BLEU/ROUGE-L/CIDEr-D as secondary; sentence-level scores; diversity (unique share, distinct-1/2)
to catch mode collapse; grounding (primary metric with the true videos minus with shuffled videos) to
prove captions depend on the video; the most-frequent-caption baseline scored alongside; and on the
embedded sample, attribute accuracy (does the caption state the object, colour, count, ... drawn).
The report places the score beside those and the published baseline (placement.py).

Captions come from predict.py (shards, cached by content, fanned out by the flow); the page from report.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import paths
from ..config import Config
from ..data.rows import split_rows
from ..io import write_json, write_parquet
from ..sample.facts import attribute_accuracy
from ..train.tracking import mlflow_run
from .metrics import PUBLISHED_BASELINE, caption_metrics, diversity, most_frequent_caption, require, sentence_scores
from .placement import placement, placement_html
from .predict import predict
from .report import report_html

log = logging.getLogger(__name__)


def evaluated_model(cfg: Config, root: Path) -> str:
    """What the report names: the family, the preset and the video tokens a clip costs."""
    from transformers import AutoConfig

    from ..model.presets import family_of, video_tokens

    config = AutoConfig.from_pretrained(root / paths.BASE)
    tokens = video_tokens(config, cfg.frames.num_frames)
    return f"{family_of(config).tag} (preset {cfg.model.preset}), {tokens} video tokens per clip"


def run(cfg: Config, root: Path, env=None) -> dict:
    require(cfg.eval.primary_metric)
    val, train = split_rows(root, "val"), split_rows(root, "train")
    predictions, cut, shuffled, budget = predict(cfg, root)
    refs = [[c] for c in val["caption_ko"]]
    baseline = [most_frequent_caption(train["caption_ko"].tolist())] * len(val)
    metrics = {
        **score(refs, predictions, shuffled, baseline, cfg.eval.primary_metric, facts=cfg.data.source == "sample"),
        "max_new_tokens": budget,
        "cut_by_budget": int(sum(cut)),
        "cut_share": sum(cut) / max(1, len(cut)),
    }
    if sum(cut):
        log.warning("%d of %d captions were cut by the generation budget (%d new tokens)", sum(cut), len(cut), budget)
    table = (
        val[["sample_id", "caption_ko"]]
        .rename(columns={"caption_ko": "reference"})
        .assign(prediction=predictions, prediction_shuffled_video=shuffled)
    )
    write_json(root / paths.METRICS, metrics)
    write_parquet(table, root / paths.PREDICTIONS)
    (root / paths.EVAL_HTML).write_text(
        report_html(root, val, table, metrics, cfg.eval.report_samples, evaluated_model(cfg, root)), encoding="utf-8"
    )
    log_to_mlflow(cfg, root, metrics)
    return metrics


def score(refs, predictions, shuffled, baseline, primary: str, facts: bool = False) -> dict:
    """The model's metrics, its shuffled-video control and the most-frequent baseline on the primary metric;
    with `facts` (the embedded sample), attribute accuracy of all three."""
    model = caption_metrics(refs, predictions)
    control = caption_metrics(refs, shuffled, meteor=primary == "meteor")
    base = caption_metrics(refs, baseline, meteor=primary == "meteor")
    out = {
        **model,
        **diversity(predictions),
        **sentence_scores([r[0] for r in refs], predictions),
        "primary_metric": primary,
        "primary": model[primary],
        "grounding": model[primary] - control[primary],
        f"shuffled_{primary}": control[primary],
        f"baseline_most_frequent_{primary}": base[primary],
        "samples": len(predictions),
    }
    return {**out, **(fact_scores([r[0] for r in refs], predictions, shuffled, baseline) if facts else {})}


def fact_scores(references: list[str], predictions: list[str], shuffled: list[str], baseline: list[str]) -> dict:
    """Attribute accuracy (sample/facts.py) per attribute and its mean, for the model and both controls."""
    out = {}
    for prefix, captions in (("", predictions), ("shuffled_", shuffled), ("baseline_most_frequent_", baseline)):
        accuracy = attribute_accuracy(references, captions)
        out |= {f"{prefix}attribute_{k}": v for k, v in accuracy.items() if k != "mean"}
        out[f"{prefix}attribute_accuracy"] = accuracy["mean"]
    return out


def log_to_mlflow(cfg: Config, root: Path, metrics: dict) -> None:
    import mlflow

    with mlflow_run(cfg, "evaluate", root):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.set_tag("published_baseline", f"{PUBLISHED_BASELINE['label']}: {PUBLISHED_BASELINE['score']}")
        mlflow.log_text(placement_html(placement(metrics)), "placement.html")
        for path in (paths.METRICS, paths.PREDICTIONS, paths.EVAL_HTML):
            mlflow.log_artifact(str(root / path))
