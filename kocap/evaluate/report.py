"""reports/eval.html: one self-contained page. On the embedded sample it opens with what a person reads at
a glance: per-attribute accuracy of the model beside the shuffled-video control and the most-frequent
caption; then where the score stands, every metric, and clips with their frame strip, reference and
prediction, each fact the caption got right or wrong marked."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

from ..data.rows import open_frames
from ..sample.facts import FACTS, read_facts
from .placement import placement, placement_html

SERIES = (
    ("model", "", "#2b6cb0"),
    ("shuffled videos", "shuffled_", "#dd6b20"),
    ("most-frequent caption", "baseline_most_frequent_", "#a0aec0"),
)
STYLE = (
    "<style>body{font-family:'Noto Sans CJK KR',sans-serif;max-width:1100px;margin:auto}"
    ".ok{background:#c6f6d5}.bad{background:#fed7d7}.fact{padding:1px 6px;margin:2px;border-radius:4px;"
    "display:inline-block;font-size:90%}</style>"
)


def frame_strip(frames: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.concatenate(list(frames), axis=1)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def attribute_chart(metrics: dict) -> str:
    """Grouped horizontal bars (inline SVG, no script): per attribute, the model and both controls."""
    facts = [f for f in FACTS if f"attribute_{f}" in metrics] + ["accuracy"]
    if len(facts) == 1:
        return ""
    bar, gap, left, width = 9, 10, 90, 520
    height = len(facts) * (3 * bar + gap) + 40
    parts = [f"<svg width='{left + width + 60}' height='{height}' role='img' aria-label='attribute accuracy'>"]
    for x in (0, 0.5, 1):
        parts.append(f"<line x1='{left + x * width}' y1='0' x2='{left + x * width}' y2='{height - 30}' stroke='#ddd'/>")
        parts.append(f"<text x='{left + x * width}' y='{height - 16}' font-size='11' text-anchor='middle'>{x:g}</text>")
    for i, fact in enumerate(facts):
        top = i * (3 * bar + gap)
        label = "mean" if fact == "accuracy" else fact
        parts.append(f"<text x='{left - 6}' y='{top + 2 * bar}' font-size='12' text-anchor='end'>{label}</text>")
        for j, (_, prefix, colour) in enumerate(SERIES):
            value = float(metrics.get(f"{prefix}attribute_{fact}", 0.0))
            y = top + j * bar
            parts.append(f"<rect x='{left}' y='{y}' width='{value * width:.1f}' height='{bar - 1}' fill='{colour}'/>")
            parts.append(f"<text x='{left + value * width + 4:.1f}' y='{y + bar - 1}' font-size='9'>{value:.2f}</text>")
    parts.append("</svg>")
    legend = " ".join(
        f"<span class='fact' style='background:{colour};color:white'>{html.escape(name)}</span>"
        for name, _, colour in SERIES
    )
    return f"<h2>Does the caption state what the clip shows?</h2><p>{legend}</p>{''.join(parts)}"


def fact_marks(reference: str, prediction: str) -> str:
    """Each fact the reference states, green where the prediction states the same, red where not."""
    truth, said = read_facts(reference), read_facts(prediction)
    marks = []
    for fact, value in truth.items():
        if value is None:
            continue
        ok = said[fact] == value
        shown = f"{fact}: {value}" if ok else f"{fact}: {value} (said {said[fact] or 'nothing'})"
        marks.append(
            f"<span class='fact {'ok' if ok else 'bad'}'>{'✓' if ok else '✗'} {html.escape(str(shown))}</span>"
        )
    return f"<p>{''.join(marks)}</p>" if marks else ""


def report_html(root, val: pd.DataFrame, table: pd.DataFrame, metrics: dict, n: int, model: str = "") -> str:
    """One self-contained page: which model was evaluated, the attribute chart (embedded sample), the
    metric table, then each clip's frame strip, reference and prediction with its facts marked."""
    facts = "attribute_accuracy" in metrics
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>"
        if isinstance(v, float)
        else f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in metrics.items()
    )
    clips = []
    for (_, idx), (_, row) in list(zip(val.iterrows(), table.iterrows()))[:n]:
        clips.append(
            f"<h3>{html.escape(row['sample_id'])}</h3><img src='data:image/png;base64,"
            f"{frame_strip(np.asarray(open_frames(root, idx)))}'>"
            f"{fact_marks(row['reference'], row['prediction']) if facts else ''}"
            f"<p><b>reference</b> {html.escape(row['reference'])}</p>"
            f"<p><b>prediction</b> {html.escape(row['prediction'])}</p>"
        )
    return (
        f"<!doctype html><meta charset='utf-8'><title>kocap evaluation</title>{STYLE}<h1>kocap evaluation</h1>"
        f"{f'<p><b>model</b> {html.escape(model)}</p>' if model else ''}"
        f"{attribute_chart(metrics) if facts else ''}{placement_html(placement(metrics))}"
        f"<p>Every registered version on these clips, side by side: <code>kocap compare</code>, then open "
        f"<code>reports/compare.html</code>.</p><h2>All metrics</h2>"
        f"<table border=1 cellpadding=4>{rows}</table><h2>Clips</h2>{''.join(clips)}"
    )
