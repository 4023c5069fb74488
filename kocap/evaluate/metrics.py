"""Caption metrics on Korean morphemes (kiwipiepy), scored with pycocoevalcap.

Korean is agglutinative: n-gram metrics over whitespace words barely match (`자동차가` vs `자동차는`),
so every metric here runs on space-joined morphemes. METEOR (the default primary metric: the published
71849 baseline's, and fair to paragraphs) needs Java; without it a run whose primary metric is METEOR
stops with a clear error, and otherwise the metric is skipped with a warning, never faked. CIDEr-D's
length penalty (sigma 6) makes it mostly a length match on ~300-morpheme paragraphs: kept as secondary.
Sentence-level scores match each reference sentence to its best predicted sentence (ROUGE-L F on
morphemes), so a paragraph that says the right things in another order is seen as such.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections import Counter
from functools import lru_cache

log = logging.getLogger(__name__)
# AI-Hub's own baseline for 71849 (its report; its model, on its own test split): a reference point, not a target
PUBLISHED_BASELINE = {
    "dataset": "71849",
    "metric": "meteor",
    "score": 0.3052,
    "label": "AI-Hub's published 71849 baseline (METEOR, its own model and test split)",
}


class MetricUnavailable(RuntimeError):
    """The primary metric cannot be computed on this machine."""


def require(metric: str) -> None:
    """Fail before any captioning when the primary metric cannot be computed here."""
    if metric == "meteor" and not shutil.which("java"):
        raise MetricUnavailable(
            "eval.primary_metric is meteor, which needs Java: install a JRE (apt-get install "
            "default-jre-headless) or choose another primary metric (kocap run "
            "eval.primary_metric=rouge_l)"
        )


_METEOR_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _meteor():
    """One METEOR Java process per Python process (starting it costs seconds)."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def _meteor_score(gts: dict, res: dict):
    with _METEOR_LOCK:
        return _meteor().compute_score(gts, res)


@lru_cache(maxsize=1)
def _kiwi():
    from kiwipiepy import Kiwi

    return Kiwi()


@lru_cache(maxsize=16384)  # ~50 MB at most of ~575-character paragraphs; a larger split just misses more
def morphemes(text: str) -> str:
    """Space-joined morpheme forms (`자동차가` -> `자동차 가`). Cached: evaluation splits the same references
    for the model, the shuffled-video control and the baseline, and the baseline repeats one caption."""
    return " ".join(t.form for t in _kiwi().tokenize(text))


def _coco(references: list[list[str]], predictions: list[str]) -> tuple[dict, dict]:
    gts = {i: [morphemes(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [morphemes(p) if p.strip() else "_"] for i, p in enumerate(predictions)}
    return gts, res


def clip_scores(references: list[list[str]], predictions: list[str], metric: str) -> tuple[float, list[float]]:
    """(corpus score, per-clip scores) of one metric on morphemes: what a paired comparison resamples."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _coco(references, predictions)
    if metric.startswith("bleu_"):
        corpus, per_clip = Bleu(4).compute_score(gts, res, verbose=0)
        n = int(metric.split("_")[1]) - 1
        return float(corpus[n]), [float(x) for x in per_clip[n]]
    if metric == "meteor":
        corpus, per_clip = _meteor_score(gts, res)
    else:
        corpus, per_clip = {"cider": Cider, "rouge_l": Rouge}[metric]().compute_score(gts, res)
    return float(corpus), [float(x) for x in per_clip]


def caption_metrics(references: list[list[str]], predictions: list[str], meteor: bool = True) -> dict[str, float]:
    """BLEU-1..4, METEOR (if Java is present), ROUGE-L and CIDEr-D on morphemes."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _coco(references, predictions)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu_{n}": float(b) for n, b in enumerate(bleu, 1)}
    out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    out["cider"] = float(Cider().compute_score(gts, res)[0])
    if meteor:
        if shutil.which("java"):
            out["meteor"] = float(_meteor_score(gts, res)[0])
        else:
            log.warning("METEOR skipped: it needs Java (apt-get install default-jre-headless); no number is reported")
    return out


def diversity(predictions: list[str]) -> dict[str, float]:
    """Mode-collapse check: share of unique captions and distinct-1/2 over morphemes."""
    tokens = [morphemes(p).split() for p in predictions]
    out = {"unique_share": len(set(predictions)) / len(predictions) if predictions else 0.0}
    for n in (1, 2):
        grams = [tuple(t[i : i + n]) for t in tokens for i in range(len(t) - n + 1)]
        out[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    return out


def most_frequent_caption(train_captions: list[str]) -> str:
    return Counter(train_captions).most_common(1)[0][0]


def sentences(text: str) -> list[str]:
    """A paragraph's sentences (split after . ? ! followed by a space or the end)."""
    return [t.strip() for t in re.split(r"(?<=[.?!])\s+", text.strip()) if t.strip()]


def _lcs_f(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 of two token lists (longest common subsequence)."""
    if not a or not b:
        return 0.0
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    lcs = row[-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


def sentence_scores(references: list[str], predictions: list[str]) -> dict[str, float]:
    """Sentence recall (each reference sentence's best match among the predicted ones), precision (each
    predicted sentence's best match among the reference's) and their F1, averaged over clips."""
    recall, precision = [], []
    for ref, pred in zip(references, predictions):
        rs = [morphemes(t).split() for t in sentences(ref)]
        ps = [morphemes(t).split() for t in sentences(pred)]
        sim = [[_lcs_f(r, q) for q in ps] for r in rs]
        recall.append(sum(max(row, default=0.0) for row in sim) / max(1, len(rs)))
        precision.append(
            sum(max((sim[i][j] for i in range(len(rs))), default=0.0) for j in range(len(ps))) / max(1, len(ps))
        )
    r, p = sum(recall) / max(1, len(recall)), sum(precision) / max(1, len(precision))
    return {"sentence_recall": r, "sentence_precision": p, "sentence_f1": 2 * r * p / (r + p) if r + p else 0.0}
