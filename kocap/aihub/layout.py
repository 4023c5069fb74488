"""What an AI-Hub archive holds, from its path: source media or labels, and which split.

Covers the layouts in aihub.md: `TS_/TL_/VS_/VL_` prefixes (also `TS1.zip`, `TS.zip`),
`01.원천데이터` / `02.라벨링데이터` folders, `[원천]` / `[라벨]` name prefixes, and
`Training` / `Validation` folders (also `1.Training`, `01.Training`).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

_PREFIX = re.compile(r"^(?P<split>[TV])(?P<kind>[SL])(?:_|\d|\.)", re.I)


def classify(tree_path: str) -> tuple[str | None, str | None]:
    """(kind, split): kind 'source' | 'label', split 'train' | 'val'; None where the path says nothing."""
    p = PurePosixPath(tree_path)
    kind = split = None
    m = _PREFIX.match(p.name)
    if m:
        kind = "source" if m["kind"].upper() == "S" else "label"
        split = "train" if m["split"].upper() == "T" else "val"
    kind = kind or _kind_from(p)
    split = split or _split_from(p)
    return kind, split


def _kind_from(p: PurePosixPath) -> str | None:
    text = "/".join(p.parts)
    if "[라벨]" in p.name or "라벨링" in text:
        return "label"
    if "[원천]" in p.name or "원천" in text:
        return "source"
    return None


def _split_from(p: PurePosixPath) -> str | None:
    for part in p.parts:
        name = re.sub(r"^\d+\.", "", part).lower()
        if name == "training":
            return "train"
        if name == "validation":
            return "val"
    return None
