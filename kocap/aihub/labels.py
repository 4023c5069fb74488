"""Label parsers for the AI-Hub datasets kocap reads.

- 71849 (배경영상 상세 설명문): one description per clip, `annotation.description_kr`
  (some sources say `description_ko`; both are accepted). Video = label stem + `.mp4`.
- 71495 (비디오 장면 설명문): `duration` plus `sentences` of
  `{"timestamps": ["MM:SS.fffff", "MM:SS.fffff"], "sentences_ko": ...}`; one sample per span.
  Inverted spans and spans past the duration are rejected; the rest of the file is kept.

Labels are read as utf-8-sig first, then cp949. Every failure is a LabelError with the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


class LabelError(ValueError):
    """A label file (or one span of it) that cannot be used; the message is the quarantine reason."""


@dataclass(frozen=True)
class LabelSample:
    sample_id: str
    clip_id: str  # the source video: samples of one clip never straddle splits
    caption_ko: str
    start_s: float | None = None
    end_s: float | None = None
    duration_s: float | None = None


def read_label(path: Path) -> dict:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp949"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise LabelError("encoding: neither utf-8 nor cp949")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelError(f"bad json: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise LabelError("bad json: top level is not an object")
    return data


def parse_71849(data: dict, stem: str) -> tuple[list[LabelSample], list[str]]:
    ann = data.get("annotation")
    caption = None
    if isinstance(ann, dict):
        caption = ann.get("description_kr") or ann.get("description_ko")
    if not isinstance(caption, str) or not caption.strip():
        raise LabelError("missing caption: annotation.description_kr / description_ko")
    return [LabelSample(stem, stem, caption.strip(), duration_s=_duration(data))], []


def parse_71495(data: dict, stem: str) -> tuple[list[LabelSample], list[str]]:
    duration = _duration(data)
    spans = data.get("sentences")
    if duration is None or not isinstance(spans, list):
        raise LabelError("missing field: duration and sentences are required")
    samples, rejected = [], []
    for i, span in enumerate(spans):
        try:
            samples.append(_span(span, i, stem, duration))
        except LabelError as exc:
            rejected.append(f"span {i}: {exc}")
    if not samples:
        raise LabelError("no usable span: " + "; ".join(rejected))
    return samples, rejected


def _span(span, i: int, stem: str, duration: float) -> LabelSample:
    if not isinstance(span, dict):
        raise LabelError("not an object")
    stamps, text = span.get("timestamps"), span.get("sentences_ko")
    if not isinstance(stamps, list) or len(stamps) != 2:
        raise LabelError("bad timestamps: need [start, end]")
    start, end = parse_timestamp(stamps[0]), parse_timestamp(stamps[1])
    if end <= start:
        raise LabelError(f"inverted span {stamps[0]} -> {stamps[1]}")
    if end > duration + 1e-6:
        raise LabelError(f"span ends at {end:.2f}s, past the clip's {duration:.2f}s")
    if not isinstance(text, str) or not text.strip():
        raise LabelError("missing caption: sentences_ko")
    return LabelSample(f"{stem}_{i:03d}", stem, text.strip(), start, end, duration)


_STAMP = re.compile(r"^\s*(\d{1,2}):(\d{1,2}(?:\.\d+)?)\s*$")


def parse_timestamp(text) -> float:
    """`MM:SS.fffff` (71495) or `M:SS.fffff` (71492) -> seconds."""
    m = _STAMP.match(str(text))
    if not m or float(m.group(2)) >= 60:
        raise LabelError(f"bad timestamp {text!r}")
    return int(m.group(1)) * 60 + float(m.group(2))


def _duration(data: dict) -> float | None:
    for holder in (data, data.get("video") or {}, data.get("metadata") or {}):
        value = holder.get("duration") if isinstance(holder, dict) else None
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            pass
    return None


PARSERS = {"71849": parse_71849, "71495": parse_71495}


def parser_for(dataset_key: str):
    if dataset_key not in PARSERS:
        raise ValueError(f"no label parser for dataset {dataset_key}; kocap reads {', '.join(PARSERS)}")
    return PARSERS[dataset_key]
