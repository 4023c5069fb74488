"""Read the sample generator's facts back from a caption: what attribute accuracy is scored on.

    read_facts("... 빨간색 자동차 두 대가 ...")   # {"color": "빨간색", "obj": "자동차", "count": 2, ...}

Each value of each attribute the generator draws has one pattern, and the generator states every fact
with exactly those words (a test reads all its captions back). A caption states a fact when exactly
one value's pattern matches: saying two colours, or none, is not stating the colour.
"""

from __future__ import annotations

import re

FACTS: dict[str, dict] = {
    "time": {"낮": r"낮(?![은고게])", "저녁": r"저녁", "밤": r"밤"},
    "weather": {"맑음": r"맑", "흐림": r"흐[리린려]", "비": r"비가|빗|비 오"},
    "scene": {"도시": r"도시|건물|빌딩", "자연": r"자연|언덕|풀밭", "해변": r"해변|바다|모래"},
    "obj": {"자동차": r"자동차", "공": r"공(?![간원기])", "사람": r"사람"},
    "color": {c: c for c in ("빨간색", "파란색", "노란색", "흰색", "보라색")},
    "count": {1: r"한 (?:대|개|명)", 2: r"두 (?:대|개|명)", 3: r"세 (?:대|개|명)"},
    "row": {"위쪽": r"위쪽", "가운데": r"가운데", "아래쪽": r"아래쪽"},
    "motion": {"오른쪽": r"왼쪽에서 오른쪽", "왼쪽": r"오른쪽에서 왼쪽", "정지": r"멈춰|제자리"},
    "camera": {"고정": r"고정", "패닝": r"회전|패닝", "줌인": r"줌인|확대"},
}
_COMPILED = {a: {v: re.compile(p) for v, p in values.items()} for a, values in FACTS.items()}


def read_facts(text: str) -> dict:
    """{attribute: the one value the text states, or None}."""
    out = {}
    for attr, values in _COMPILED.items():
        said = [v for v, pattern in values.items() if pattern.search(text)]
        out[attr] = said[0] if len(said) == 1 else None
    return out


def attribute_accuracy(references: list[str], predictions: list[str]) -> dict[str, float]:
    """Per attribute, the share of clips whose prediction states the fact the reference states; and their mean.
    Clips whose reference does not state an attribute are left out of that attribute."""
    truths, saids = [read_facts(r) for r in references], [read_facts(p) for p in predictions]
    out = {}
    for attr in FACTS:
        pairs = [(t[attr], s[attr]) for t, s in zip(truths, saids) if t[attr] is not None]
        if pairs:
            out[attr] = sum(t == s for t, s in pairs) / len(pairs)
    out["mean"] = sum(out.values()) / len(out) if out else 0.0
    return out
