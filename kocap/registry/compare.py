"""Every registered version side by side on this project's current validation clips.

    kocap compare        # prints the table; reports/compare.json holds it

Each complete version captions the same clips with the same generation budget (the current evaluation's),
as the gate does for the champion; captions and their timing are cached per version run × validation set ×
budget (`.kocap-cache/compare/`), so a second call only scores. Columns: the primary metric, attribute
accuracy (embedded sample), unique-caption share, video tokens per clip, generation tokens/s (measured when
the captions were made, on this machine), and peak accelerator memory where there was one.
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
            }
        )
    report = {"metric": cfg.eval.primary_metric, "clips": len(val), "validation_set": val_set, "versions": rows}
    write_json(root / paths.COMPARE_REPORT, report)
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


def table(report: dict) -> str:
    """The comparison as aligned text, best primary metric first."""
    head = ["version", "family", report["metric"], "attributes", "unique", "video tokens", "tokens/s", "peak GiB"]
    fmt = lambda x, d=3: "–" if x is None else f"{x:.{d}f}"  # noqa: E731
    lines = [head]
    for r in sorted(report["versions"], key=lambda r: -r["primary"]):
        tag = f"v{r['version']}" + (f" @{','.join(r['aliases'])}" if r["aliases"] else "")
        lines.append(
            [
                tag,
                r["family"] + (f" ({r['preset']})" if r["preset"] else ""),
                fmt(r["primary"]),
                fmt(r["attribute_accuracy"]),
                fmt(r["unique_share"], 2),
                str(r["video_tokens"]),
                fmt(r["tokens_per_s"], 1),
                fmt(r["peak_gib"], 2),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(text) + f"\n({report['clips']} validation clips, set {report['validation_set']})"
