"""The promotion gate: a challenger replaces the champion only when it is better on the same clips by
more than the noise.

    comparison = compare(references, challenger_captions, champion_captions, "meteor", version="3", clips=...)
    promote, reasons = gate(metrics, validation, comparison, cfg)

Both models caption the current validation set (the champion's captions are regenerated when the
set changed, cached by version x set), and decoding is deterministic, so the two numbers are about the
same clips and the same decode. The decision is a paired bootstrap over clips: the challenger must
beat the champion with the one-sided 95% lower bound of the mean per-clip gain above
`registry.min_improvement`; a gain inside the noise keeps the champion.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP = 2000


@dataclass
class Comparison:
    champion_version: str
    metric: str
    champion: float  # corpus-level primary metric of the champion on these clips
    challenger: float  # ... and of the challenger
    mean_gain: float  # mean per-clip gain (challenger - champion)
    lower95: float  # one-sided 95% lower bound of the mean per-clip gain (paired bootstrap)
    clips: int
    val_set: str  # hash of the validation set both were scored on

    def tags(self) -> dict[str, str]:
        return {f"gate.{k}": str(round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def paired_lower_bound(gains: np.ndarray, seed: int = 0, rounds: int = BOOTSTRAP) -> float:
    """One-sided 95% lower bound of the mean of per-clip gains, by resampling clips with replacement."""
    gains = np.asarray(gains, dtype=float)
    if len(gains) < 2:
        return float("-inf")  # one clip says nothing about the noise
    idx = np.random.default_rng(seed).integers(0, len(gains), size=(rounds, len(gains)))
    return float(np.quantile(gains[idx].mean(axis=1), 0.05))


def compare(
    references: list[list[str]], challenger: list[str], champion: list[str], metric: str, version: str, val_set: str
) -> Comparison:
    from ..evaluate.metrics import clip_scores

    ours, theirs = clip_scores(references, challenger, metric), clip_scores(references, champion, metric)
    gains = np.asarray(ours[1]) - np.asarray(theirs[1])
    return Comparison(
        champion_version=str(version),
        metric=metric,
        champion=theirs[0],
        challenger=ours[0],
        mean_gain=float(gains.mean()),
        lower95=paired_lower_bound(gains),
        clips=len(gains),
        val_set=val_set,
    )


def gate(
    metrics: dict, validation: dict, comparison: Comparison | None, cfg, lost: dict | None = None
) -> tuple[bool, list[str]]:
    """Whether a challenger becomes champion, and why (every failed condition is listed). Fails closed:
    each condition is stated as what must hold, so a NaN (every comparison with it is false) or a
    missing figure keeps the challenger a challenger, with the reason. `lost` ({"share", "filekeys"}):
    what of the dataset had not landed; a model trained on part of it says so in its reasons."""
    promote, reasons = _judge(metrics, validation, comparison, cfg)
    if lost and lost.get("share"):
        keys = lost.get("filekeys") or []
        reasons.append(
            f"trained on partial data: {lost['share']:.1%} of the dataset (by size) had not landed "
            f"(filekeys {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}); they are fetched again next run"
        )
    return promote, reasons


def _judge(metrics: dict, validation: dict, comparison: Comparison | None, cfg) -> tuple[bool, list[str]]:
    r, reasons = cfg.registry, []
    name = metrics["primary_metric"]
    if (
        validation.get("reject_frac", 1) > cfg.validate_.max_reject_frac
        or 0 in validation.get("kept_by_split", {}).values()
    ):
        reasons.append("validation did not pass")
    figures = {
        name: metrics.get("primary"),
        "unique-caption share": metrics.get("unique_share"),
        "grounding": metrics.get("grounding"),
        **({"champion's score": comparison.champion} if comparison is not None else {}),
    }  # a NaN gain bound (or -inf: one clip) is refused below, where it "does not exceed" the bar
    broken = [k for k, v in figures.items() if not _finite(v)]
    if broken:
        reasons.append(f"not a finite number: {', '.join(f'{k} = {figures[k]}' for k in broken)}")
    clips = int(metrics.get("samples") or 0)
    if not clips >= r.min_clips:
        reasons.append(f"{clips} validation clips, fewer than registry.min_clips = {r.min_clips}: too few to judge")
    if comparison is not None and not comparison.lower95 > r.min_improvement:
        reasons.append(
            f"{name} on the same {comparison.clips} clips: {comparison.challenger:.4f} vs champion "
            f"v{comparison.champion_version}'s {comparison.champion:.4f}; the 95% lower bound of the gain "
            f"({comparison.lower95:.4f}, paired bootstrap) does not exceed {r.min_improvement}"
        )
    unique, grounding = metrics.get("unique_share"), metrics.get("grounding")
    if not (_finite(unique) and unique >= r.min_unique_share):
        reasons.append(f"unique-caption share {_fmt(unique, 2)} below {r.min_unique_share} (mode collapse)")
    if not (_finite(grounding) and grounding > 0):
        reasons.append(f"grounding {_fmt(grounding, 4)} is not positive: captions do not depend on the video")
    if reasons:
        return False, reasons
    if comparison is None:
        return True, [f"{name} {metrics['primary']:.4f} (first champion)"]
    return True, [
        f"{name} on the same {comparison.clips} clips: {comparison.challenger:.4f} beats champion "
        f"v{comparison.champion_version}'s {comparison.champion:.4f} (gain 95% lower bound "
        f"{comparison.lower95:.4f} > {r.min_improvement})"
    ]


def _finite(value) -> bool:
    """A real, finite number (numpy scalars included); None, text and NaN are not."""
    try:
        return math.isfinite(float(value)) and not isinstance(value, (str, bool))
    except (TypeError, ValueError):
        return False


def _fmt(value, digits: int) -> str:
    return f"{value:.{digits}f}" if _finite(value) else str(value)
