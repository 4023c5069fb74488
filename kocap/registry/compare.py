"""Every registered version side by side on this project's current validation clips.

    kocap compare        # prints the table; reports/compare.json holds it, reports/compare.html shows it

Each complete version captions the same clips with the same generation budget (the current evaluation's),
as the gate does for the champion; captions and their timing are cached per version run × validation set ×
budget (`.kocap-cache/compare/`), so a second call only scores. Columns: the primary metric, attribute
accuracy (embedded sample), unique-caption share, video tokens per clip, generation tokens/s (measured when
the captions were made, on this machine), and peak accelerator memory where there was one. The page adds the
first clips' references beside every version's caption, so a user reads what the figures summarise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import paths
from ..config import Config
from ..io import write_json
from ..model.presets import FAMILY

CACHE = ".kocap-cache/compare"


def compare_versions(cfg: Config, root: Path) -> dict:
    from mlflow import MlflowClient

    from ..data.rows import split_rows
    from ..evaluate.metrics import clip_scores
    from ..sample.facts import attribute_accuracy
    from .register import usable, validation_set

    client, name = MlflowClient(), cfg.registry.model_name
    versions = sorted(
        (v for v in client.search_model_versions(f"name='{name}'") if usable(v)), key=lambda v: int(v.version)
    )
    aliases = _aliases(client, name)
    val = split_rows(root, "val")
    val_set = validation_set(root, val)
    budget = int(json.loads((root / paths.METRICS).read_text(encoding="utf-8"))["max_new_tokens"])
    refs = val["caption_ko"].tolist()
    rows = []
    for v in versions:
        made = version_captions(cfg, root, v, val, val_set, budget)
        caps = made["captions"]
        rows.append(
            {
                "version": int(v.version),
                "aliases": aliases.get(str(v.version), []),
                "family": v.tags.get("family", FAMILY),
                "preset": v.tags.get("preset", ""),
                "primary": clip_scores([[r] for r in refs], caps, cfg.eval.primary_metric)[0],
                "attribute_accuracy": attribute_accuracy(refs, caps)["mean"] if cfg.data.source == "sample" else None,
                "unique_share": len(set(caps)) / len(caps) if caps else 0.0,
                "video_tokens": made["video_tokens"],
                "tokens_per_s": made["new_tokens"] / made["seconds"] if made["seconds"] else None,
                "peak_gib": made["peak_gib"],
                "captions": caps,
            }
        )
    report = {
        "metric": cfg.eval.primary_metric,
        "clips": len(val),
        "validation_set": val_set,
        "sample_ids": val["sample_id"].tolist(),
        "references": refs,
        "versions": rows,
    }
    write_json(root / paths.COMPARE_REPORT, report)
    (root / paths.COMPARE_PAGE).write_text(compare_html(report, _strips(root, val)), encoding="utf-8")
    return report


def version_captions(cfg: Config, root: Path, version, val, val_set: str, budget: int) -> dict:
    """A version's captions of `val` with the timing of making them (cached)."""
    path = root / CACHE / f"{version.name}-{version.run_id or 'v' + version.version}-{val_set}-{budget}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    import mlflow
    import torch

    from ..model.presets import video_tokens
    from ..model.video_lm import base_model
    from .champion import _caption

    captioner = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}").unwrap_python_model().captioner
    captioner.max_new_tokens = budget
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    captions = _caption(captioner, cfg, root, val)
    seconds = time.perf_counter() - start
    made = {
        "captions": captions,
        "seconds": seconds,
        "new_tokens": sum(len(captioner.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in captions),
        "video_tokens": video_tokens(base_model(captioner.model).config, captioner.cfg.frames.num_frames),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }
    write_json(path, made)
    return made


def _aliases(client, name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alias, number in client.get_registered_model(name).aliases.items():
        out.setdefault(str(number), []).append(alias)
    return out


def _cells(report: dict) -> list[list[str]]:
    """The header and one row of display strings per version, best primary metric first."""
    head = ["version", "family", report["metric"], "attributes", "unique", "video tokens", "tokens/s", "peak GiB"]
    fmt = lambda x, d=3: "–" if x is None else f"{x:.{d}f}"  # noqa: E731
    lines = [head]
    for r in _ranked(report):
        lines.append(
            [
                _tag(r),
                r["family"] + (f" ({r['preset']})" if r["preset"] else ""),
                fmt(r["primary"]),
                fmt(r["attribute_accuracy"]),
                fmt(r["unique_share"], 2),
                str(r["video_tokens"]),
                fmt(r["tokens_per_s"], 1),
                fmt(r["peak_gib"], 2),
            ]
        )
    return lines


def _ranked(report: dict) -> list[dict]:
    return sorted(report["versions"], key=lambda r: -r["primary"])


def _tag(r: dict) -> str:
    return f"v{r['version']}" + (f" @{','.join(r['aliases'])}" if r["aliases"] else "")


def table(report: dict) -> str:
    """The comparison as aligned text, best primary metric first."""
    lines = _cells(report)
    head = lines[0]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(text) + f"\n({report['clips']} validation clips, set {report['validation_set']})"


SHOWN = 8  # clips whose captions the page shows


def _strips(root: Path, val) -> list[str]:
    """The frame strips (base64 PNG) of the first clips the page shows, as the eval report draws them."""
    import numpy as np

    from ..data.rows import open_frames
    from ..evaluate.report import frame_strip

    return [frame_strip(np.asarray(open_frames(root, row))) for _, row in val.head(SHOWN).iterrows()]


def compare_html(report: dict, strips: list[str] = (), clips: int = SHOWN) -> str:
    """One self-contained page: the table, then the first `clips` validation clips (frame strip when given)
    with the reference and each version's caption (facts marked on the embedded sample)."""
    import html

    from ..evaluate.report import STYLE, fact_marks

    esc = html.escape
    head, *body = _cells(report)
    grid = "".join(
        "<tr>" + "".join(f"<{t}>{esc(c)}</{t}>" for c in line) + "</tr>"
        for t, line in [("th", head), *[("td", b) for b in body]]
    )
    facts = any(r["attribute_accuracy"] is not None for r in report["versions"])
    shown = []
    for i, (sid, ref) in enumerate(list(zip(report["sample_ids"], report["references"]))[:clips]):
        rows = "".join(
            f"<tr><td>{esc(_tag(r))}</td><td>{esc(r['captions'][i])}"
            f"{fact_marks(ref, r['captions'][i]) if facts else ''}</td></tr>"
            for r in _ranked(report)
        )
        strip = f"<img src='data:image/png;base64,{strips[i]}'>" if i < len(strips) else ""
        shown.append(
            f"<h3>{esc(sid)}</h3>{strip}<p><b>reference</b> {esc(ref)}</p><table border=1 cellpadding=4>{rows}</table>"
        )
    return (
        f"<!doctype html><meta charset='utf-8'><title>kocap versions</title>{STYLE}<h1>Registered versions, "
        f"same clips</h1><p>{report['clips']} validation clips (set {esc(report['validation_set'])}), "
        f"best {esc(report['metric'])} first; tokens/s as measured on the machine that captioned.</p>"
        f"<table border=1 cellpadding=4>{grid}</table><h2>Captions of the first clips</h2>{''.join(shown)}"
    )
