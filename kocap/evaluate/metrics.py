"""Caption metrics on Korean morphemes (kiwipiepy), scored with pycocoevalcap.

Korean is agglutinative: n-gram metrics over whitespace words barely match (`자동차가` vs `자동차는`),
so every metric here runs on space-joined morphemes. METEOR needs Java; without it the metric is
skipped with a warning, never faked.
"""
from __future__ import annotations

import logging
import shutil
from collections import Counter
from functools import lru_cache

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _kiwi():
    from kiwipiepy import Kiwi

    return Kiwi()


def morphemes(text: str) -> str:
    """Space-joined morpheme forms (`자동차가` -> `자동차 가`)."""
    return " ".join(t.form for t in _kiwi().tokenize(text))


def _coco(references: list[list[str]], predictions: list[str]) -> tuple[dict, dict]:
    gts = {i: [morphemes(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [morphemes(p) if p.strip() else "_"] for i, p in enumerate(predictions)}
    return gts, res


def cider(references: list[list[str]], predictions: list[str]) -> float:
    """CIDEr-D (pycocoevalcap) over morphemes; references[i] are the reference captions of item i."""
    from pycocoevalcap.cider.cider import Cider

    return float(Cider().compute_score(*_coco(references, predictions))[0])


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
        from pycocoevalcap.meteor.meteor import Meteor

        corpus, per_clip = Meteor().compute_score(gts, res)
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
            from pycocoevalcap.meteor.meteor import Meteor

            out["meteor"] = float(Meteor().compute_score(gts, res)[0])
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
