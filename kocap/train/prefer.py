"""The preference step (DPO) after stage 2: its parts, each checked on its own.

    scores = score_captions(reference, candidates, cut, metric, facts=True)   # one score per candidate
    pair = best_and_worst(clip, candidates, scores, min_margin)               # or None: too close to teach
    loss, stats = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1)

Pairs need no judge model: K captions sampled from the stage-2 model for a training clip are scored
against the clip's reference, and the best is preferred over the worst when the gap is wide enough.
The score rewards what the reference says (the primary metric on morphemes; on the embedded sample
also the share of its facts stated) and penalises what collapsed captioners do: sentences repeated
within a caption, and captions the generation budget cut.

The loss is LLaVA-Hound's (the DPO recipe of LLaVA-NeXT-Video): pure sigmoid DPO on the summed
log-probabilities of the answer tokens (`video_lm.sequence_logprobs`, the same answer masking as stage
2). The reference model is the stage-2 model itself: its log-probabilities are computed once before
training and stored with the pairs, so no frozen copy sits beside the trained one on a T4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..evaluate.metrics import clip_scores, sentences
from ..sample.facts import read_facts

REPEAT_PENALTY = 1.0  # per unit share of a caption's sentences that repeat an earlier one
CUT_PENALTY = 0.5  # a caption the budget cut ends mid-sentence: never the better one when it costs this much


@dataclass(frozen=True)
class Scored:
    score: float
    primary: float
    facts: float | None  # share of the reference's facts stated; None off the embedded sample
    repeated: float  # share of sentences repeating an earlier one
    cut: bool


def repeated_share(caption: str) -> float:
    """Share of a caption's sentences that are a repeat of an earlier one (the collapse symptom)."""
    said = sentences(caption)
    return (len(said) - len(set(said))) / len(said) if said else 0.0


def facts_share(reference: str, caption: str) -> float | None:
    """Share of the facts the reference states that the caption states the same way (sample/facts.py)."""
    truth, said = read_facts(reference), read_facts(caption)
    stated = [k for k, v in truth.items() if v is not None]
    return sum(said[k] == truth[k] for k in stated) / len(stated) if stated else None


def score_captions(reference: str, candidates: list[str], cut: list[bool], metric: str, facts: bool) -> list[Scored]:
    """Each candidate's score against the reference: primary metric (+ facts share) - penalties."""
    _, primary = clip_scores([[reference]] * len(candidates), candidates, metric)
    out = []
    for caption, p, was_cut in zip(candidates, primary, cut):
        f = facts_share(reference, caption) if facts else None
        rep = repeated_share(caption)
        total = p + (f or 0.0) - REPEAT_PENALTY * rep - CUT_PENALTY * was_cut
        out.append(Scored(total, p, f, rep, bool(was_cut)))
    return out


def best_and_worst(clip: str, candidates: list[str], scored: list[Scored], min_margin: float) -> dict | None:
    """The pair row for one clip (chosen = best, rejected = worst), or None when the two are closer than
    `min_margin` or the same text: such a pair would teach noise."""
    order = sorted(range(len(candidates)), key=lambda i: (-scored[i].score, i))
    best, worst = order[0], order[-1]
    if scored[best].score - scored[worst].score < min_margin or candidates[best] == candidates[worst]:
        return None
    return {
        "sample_id": clip,
        "chosen": candidates[best],
        "rejected": candidates[worst],
        "score_chosen": scored[best].score,
        "score_rejected": scored[worst].score,
        "why": why(scored[best], scored[worst]),
    }


def why(chosen: Scored, rejected: Scored) -> str:
    """What separates the pair, in words a reviewer of data/preferences.parquet reads."""
    parts = [f"primary {chosen.primary:.3f} vs {rejected.primary:.3f}"]
    if chosen.facts is not None:
        parts.append(f"facts {chosen.facts:.2f} vs {rejected.facts:.2f}")
    if rejected.repeated > chosen.repeated:
        parts.append(f"rejected repeats {rejected.repeated:.0%} of its sentences")
    if rejected.cut and not chosen.cut:
        parts.append("rejected was cut by the generation budget")
    return "; ".join(parts)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sigmoid DPO: -log σ(β·[(πc - rc) - (πr - rr)]), with the implicit rewards' mean margin and the
    preference accuracy (chosen rewarded above rejected; a tie counts half, so the untrained model,
    whose rewards are all 0, scores 0.5 rather than 0)."""
    margin = beta * (policy_chosen - ref_chosen) - beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(margin).mean()
    margin = margin.detach()
    ranked = (margin > 0).float() + 0.5 * (margin == 0).float()
    return loss, {"reward_margin": float(margin.mean()), "preference_accuracy": float(ranked.mean())}
