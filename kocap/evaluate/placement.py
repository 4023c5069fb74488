"""Where a score stands: the primary metric beside the reference points a reader needs to judge it.

    rows = placement(metrics, comparison)     # for reports/eval.html, reports/register.json, MLflow

The published 71849 baseline is on AI-Hub's own model and test split (labelled so: a reference point,
not the same clips); the most-frequent caption and the shuffled-video control are on this run's
validation clips; the champion is re-scored on the same clips at registration (registry/gate.py).
"""

from __future__ import annotations

import html

from .metrics import PUBLISHED_BASELINE


def placement(metrics: dict, comparison: dict | None = None, registered: bool = False) -> list[dict]:
    """Rows of {what, score, note}; score is None where there is no number to show. `registered`: the
    register stage's view, where no comparison means there was no champion to compare with."""
    name = metrics["primary_metric"]
    rows = [
        {"what": "this model", "score": metrics["primary"], "note": f"{name}, {metrics['samples']} validation clips"},
        {
            "what": "most frequent training caption",
            "score": metrics[f"baseline_most_frequent_{name}"],
            "note": "the same caption for every clip: what text alone earns",
        },
        {
            "what": "this model, shuffled videos",
            "score": metrics[f"shuffled_{name}"],
            "note": "captions made from other clips' videos: what the video adds is the gap",
        },
    ]
    rows.append(_champion_row(name, comparison, registered))
    published = PUBLISHED_BASELINE
    rows.append(
        {
            "what": published["label"],
            "score": published["score"] if name == published["metric"] else None,
            "note": "on its own data, not these clips"
            + ("" if name == published["metric"] else f"; it reports {published['metric']}, not {name}"),
        }
    )
    rows.append(
        {
            "what": "captions cut by the generation budget",
            "score": metrics.get("cut_share"),
            "note": f"share of {metrics['samples']} (eval.max_new_tokens = {metrics.get('max_new_tokens')})",
        }
    )
    return rows


def _champion_row(name: str, comparison: dict | None, registered: bool) -> dict:
    if comparison is None:
        note = (
            "none: no champion when this version was registered"
            if registered
            else "scored at registration on these clips (reports/register.json, version tags gate.*)"
        )
        return {"what": "current champion, same clips", "score": None, "note": note}
    return {
        "what": f"champion v{comparison['champion_version']}, same clips",
        "score": float(comparison["champion"]),
        "note": f"{name} on validation set {comparison['val_set']} ({comparison['clips']} clips), "
        f"this model {float(comparison['challenger']):.4f} there",
    }


def _fmt(score: float | None) -> str:
    return "—" if score is None else f"{score:.4f}"


def placement_html(rows: list[dict]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(r['what'])}</td><td>{_fmt(r['score'])}</td><td>{html.escape(r['note'])}</td></tr>"
        for r in rows
    )
    head = "<tr><th></th><th>score</th><th></th></tr>"
    return f"<h2>Where the score stands</h2><table border=1 cellpadding=4>{head}{cells}</table>"


def placement_text(rows: list[dict]) -> str:
    return "\n".join(f"  {r['what']:<44} {_fmt(r['score']):>8}  {r['note']}" for r in rows)
