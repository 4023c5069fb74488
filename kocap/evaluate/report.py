"""reports/eval.html: one self-contained page, where the score stands, every metric, then clips with their
frame strip, reference and prediction."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

from ..data.rows import open_frames
from .placement import placement, placement_html


def _strip(frames: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.concatenate(list(frames), axis=1)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def report_html(root, val: pd.DataFrame, table: pd.DataFrame, metrics: dict, n: int) -> str:
    """One self-contained page: the metric table, then each clip's frame strip, reference and prediction."""
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
            f"{_strip(np.asarray(open_frames(root, idx)))}'><p><b>reference</b> {html.escape(row['reference'])}</p>"
            f"<p><b>prediction</b> {html.escape(row['prediction'])}</p>"
        )
    return (
        f"<!doctype html><meta charset='utf-8'><title>kocap evaluation</title><h1>kocap evaluation</h1>"
        f"{placement_html(placement(metrics))}<h2>All metrics</h2>"
        f"<table border=1 cellpadding=4>{rows}</table>{''.join(clips)}"
    )
