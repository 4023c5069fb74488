"""Caption metrics on Korean morphemes (kiwipiepy), scored with pycocoevalcap.

Korean is agglutinative: n-gram metrics over whitespace words barely match (`자동차가` vs `자동차는`),
so every metric here runs on space-joined morphemes.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache


@lru_cache(maxsize=1)
def _kiwi():
    from kiwipiepy import Kiwi

    return Kiwi()


def morphemes(text: str) -> str:
    """Space-joined morpheme forms (`자동차가` -> `자동차 가`)."""
    return " ".join(t.form for t in _kiwi().tokenize(text))


def cider(references: list[list[str]], predictions: list[str]) -> float:
    """CIDEr-D (pycocoevalcap) over morphemes; references[i] are the reference captions of item i."""
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [morphemes(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [morphemes(p)] for i, p in enumerate(predictions)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def most_frequent_caption(train_captions: list[str]) -> str:
    return Counter(train_captions).most_common(1)[0][0]
