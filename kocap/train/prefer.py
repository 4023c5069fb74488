"""The prefer stage: DPO after stage 2, on pairs of the model's own captions (`prefer.enabled`).

    kocap stage prefer       # -> data/preferences.parquet, models/prefer/adapter, reports/prefer.json

    scores = score_captions(reference, candidates, cut, metric, facts=True)   # one score per candidate
    pairs = ranked_pairs(clip, candidates, scores, min_margin, most=1)        # best vs worst; [] if too close
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

DPO on captions alone can learn a preference the text carries without the clip (the held-out pairs
ranked as well on other clips' videos; README). `prefer.video_weight` adds mDPO's conditional term
(Wang et al. 2024): the same sigmoid loss with the chosen caption on its own clip preferred over the
chosen caption on another training clip's video, so the reward has to come from the video.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import paths
from ..config import Config
from ..data.rows import derangement, split_rows
from ..evaluate.metrics import clip_scores, require, sentences
from ..io import write_json, write_parquet
from ..model import runtime
from ..model.features import FeatureStore
from ..model.text import SampleTooLong, encode, load_tokenizer
from ..model.video_lm import generate, sequence_logprobs, video_media
from ..sample.facts import read_facts
from .loop import plan, run_params, run_signature, weight_files

log = logging.getLogger(__name__)
CACHE = ".kocap-cache/prefer"  # sampled candidates per shard of clips, keyed by model, params and clips
SHARD = 16
SAMPLING = ("candidates", "temperature", "top_p", "top_k", "repetition_penalty", "seed")  # what candidates depend on

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
    pairs = ranked_pairs(clip, candidates, scored, min_margin, 1)
    return pairs[0] if pairs else None


def ranked_pairs(clip: str, candidates: list[str], scored: list[Scored], min_margin: float, most: int) -> list[dict]:
    """Up to `most` pair rows for one clip, the widest score gap first (rank 0 is best vs worst): every
    (better, worse) pair of distinct texts at least `min_margin` apart. More pairs from the same candidates
    give DPO more to learn from without sampling more (the candidates are the costly part)."""
    first = {text: i for i, text in reversed(list(enumerate(candidates)))}  # a repeated text pairs once
    order = sorted(first.values(), key=lambda i: (-scored[i].score, i))  # best first
    place = {i: n for n, i in enumerate(order)}

    def gap(a: int, b: int) -> float:
        return scored[a].score - scored[b].score

    pairs = [(a, b) for n, a in enumerate(order) for b in order[n + 1 :] if gap(a, b) > 0 and gap(a, b) >= min_margin]
    pairs.sort(key=lambda ab: (-gap(*ab), place[ab[0]], -place[ab[1]]))  # widest first; ties: best, then worst
    return [
        {
            "sample_id": clip,
            "rank": rank,
            "chosen": candidates[a],
            "rejected": candidates[b],
            "score_chosen": scored[a].score,
            "score_rejected": scored[b].score,
            "why": why(scored[a], scored[b]),
        }
        for rank, (a, b) in enumerate(pairs[:most])
    ]


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


def run(cfg: Config, root: Path, env=None) -> dict:
    s = cfg.prefer
    if not s.enabled:
        return skip(root)
    require(cfg.eval.primary_metric)
    dev = runtime.device()
    prec = runtime.precision(s.precision, dev)
    tokenizer = load_tokenizer(str(root / paths.BASE))
    model = load_stage2(root, prec, dev)
    store = FeatureStore(model, root)
    rows = training_clips(root, s.max_clips, s.seed)
    videos = other_clips(rows, s.seed + 1)  # the video term's: each chosen caption on another clip's video
    others = videos if s.video_weight else None  # trained on only with prefer.video_weight
    pairs = preference_pairs(cfg, root, model, tokenizer, store, rows, others)
    held = heldout(pairs.sample_id, s.heldout_frac, s.seed)  # by clip: no held-out clip's caption is trained on
    pairs["heldout"] = held
    widest = pairs[held & (pairs["rank"] == 0)]  # the figures below: one pair a clip, best vs worst, whatever
    # prefer.pairs_per_clip is, so they compare across settings
    write_parquet(pairs, root / paths.PREFERENCES)
    train = np.flatnonzero(~held)
    if not len(train):
        raise ValueError(
            f"no training pairs: {len(pairs)} pair(s) from {s.candidates} candidates per clip with a score gap of "
            f"at least prefer.min_margin={s.min_margin}; sample more (prefer.candidates, temperature) or lower it"
        )
    before = pair_accuracy(model, tokenizer, store, cfg, widest, rows, others)
    blind_rows = other_clips(rows, s.seed)
    blind = with_reference(model, tokenizer, store, cfg, widest, blind_rows, None)
    # measured with the term off too (does plain DPO's reward read the clip?); with it on, the pairs have it
    own = widest if others is not None else with_reference(model, tokenizer, store, cfg, widest, rows, videos)
    sides = pairs[["sample_id", "chosen", "rejected"]].values.tolist()
    signature = run_signature(
        run_params(cfg.section("prefer")), cfg.section("model"), sides, files=weight_files(root / paths.ADAPTER)
    )
    schedule, spec = plan(len(train), s, root / paths.PREFER / "checkpoints", signature, prec, dev)

    def batch(micro: int):
        take = pairs.iloc[train[schedule.indices(micro)]]
        loss, stats, tokens = pair_loss(model, tokenizer, store, cfg, take, rows, others)
        return loss, len(take), tokens, stats

    def save():
        model.save_pretrained(root / paths.PREFER_ADAPTER)
        tokenizer.save_pretrained(root / paths.PREFER_ADAPTER)

    from .tracking import train_tracked

    result = train_tracked(
        cfg, "prefer", root, model, batch, spec, root / paths.PREFER_PLOT, save, getattr(env, "track", True)
    )
    after = pair_accuracy(model, tokenizer, store, cfg, widest, rows, others)
    narrower = pairs[held & (pairs["rank"] > 0)]
    after_narrower = pair_accuracy(model, tokenizer, store, cfg, narrower, rows, others)  # the widest not scored twice
    n = len(widest) + len(narrower)
    held_all = ((after or 0.0) * len(widest) + (after_narrower or 0.0) * len(narrower)) / n if n else None
    after_blind = pair_accuracy(model, tokenizer, store, cfg, blind, blind_rows, None)
    video = pair_accuracy(model, tokenizer, store, cfg, own, rows, videos, "video_preference_accuracy")
    report = {
        **result,
        "enabled": True,
        "pairs": int(len(pairs)),
        "pairs_per_clip": s.pairs_per_clip,
        "heldout_clips": int(len(widest)),
        "heldout_pairs": int(held.sum()),
        "heldout_preference_accuracy_before": before,
        "heldout_preference_accuracy_after": after,
        "heldout_preference_accuracy_other_videos": after_blind,
        # every held-out pair alike, the narrower gaps (prefer.pairs_per_clip > 1) with the widest
        "heldout_preference_accuracy_all_pairs": held_all,
        "video_weight": s.video_weight,
        "heldout_own_video_preferred": video,  # chosen rewarded more on its clip than on another's video
        "precision": prec,
        "device": dev,
    }
    write_json(root / paths.PREFER_REPORT, report)
    return report


def skip(root: Path) -> dict:
    """prefer.enabled is false: no pairs, no adapter (an old one is removed: evaluation must not find it)."""
    from .tracking import loss_plot

    shutil.rmtree(root / paths.PREFER, ignore_errors=True)
    (root / paths.PREFER).mkdir(parents=True)
    report = {"enabled": False, "reason": "prefer.enabled is false: evaluate and register take stage 2's adapter"}
    write_json(root / paths.PREFER / "prefer.json", report)
    write_parquet(pd.DataFrame(columns=PAIR_COLUMNS), root / paths.PREFERENCES)
    loss_plot([], root / paths.PREFER_PLOT, "prefer: off")
    write_json(root / paths.PREFER_REPORT, report)
    return report


REF = ("ref_chosen", "ref_rejected", "ref_chosen_other")
PAIR_COLUMNS = [
    "sample_id",
    "rank",  # 0: the clip's best vs its worst candidate; 1, 2, ...: narrower gaps (prefer.pairs_per_clip)
    "chosen",
    "rejected",
    "score_chosen",
    "score_rejected",
    "why",
    "ref_chosen",
    "ref_rejected",
    "ref_chosen_other",  # the chosen caption on another clip's video (prefer.video_weight > 0; else NaN)
]


def load_stage2(root: Path, prec: str, dev: str):
    """The stage-2 model to continue: its LoRA trainable, the projector frozen (LLaVA-Hound's recipe)."""
    from peft import PeftModel

    from ..model.build import load_base, ready_to_train
    from ..model.family import family_of

    model = PeftModel.from_pretrained(load_base(root / paths.BASE, prec, dev), root / paths.ADAPTER, is_trainable=True)
    kept = [f".{m}." for m in family_of(model.config).trained_modules]
    for name, p in model.named_parameters():
        if any(k in name for k in kept):
            p.requires_grad_(False)
    return ready_to_train(model, dev)


def training_clips(root: Path, max_clips: int, seed: int) -> pd.DataFrame:
    """The training rows candidates are sampled for (a seeded subset of `max_clips`, 0 = all), by sample id."""
    rows = split_rows(root, "train")
    if max_clips:
        rows = rows.iloc[np.sort(np.random.default_rng(seed).permutation(len(rows))[:max_clips])]
    return rows.set_index("sample_id", drop=False)


def other_clips(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """`rows` with each clip's row (frames, features) replaced by another clip's, under the same index: the
    held-out pairs scored on videos they were not sampled for tell a preference that reads the clip from
    one the text alone carries (the evaluation's shuffled-video control, for DPO)."""
    out = rows.iloc[derangement(len(rows), seed)].copy()
    out.index = rows.index
    return out


def heldout(clips: pd.Series, frac: float, seed: int) -> np.ndarray:
    """A seeded mask of the pairs kept out of training: every pair of a seeded `frac` of the clips (with one
    pair a clip, the pairs themselves)."""
    order = pd.unique(clips)
    kept = order[np.random.default_rng(seed).permutation(len(order))[: int(round(len(order) * frac))]]
    return clips.isin(kept).to_numpy()


def preference_pairs(cfg: Config, root: Path, model, tokenizer, store, rows: pd.DataFrame, others) -> pd.DataFrame:
    """Candidates sampled per training clip, scored and paired, with the reference log-probabilities
    (the stage-2 model before any DPO step) of both sides, and of the chosen on `others`' videos."""
    from ..evaluate.predict import model_stamps, resolved_budget

    s, budget, facts = cfg.prefer, resolved_budget(cfg, root), cfg.data.source == "sample"
    stamps = model_stamps(root, root / paths.BASE, root / paths.ADAPTER)  # once: the model does not change here
    out = []
    for start in range(0, len(rows), SHARD):
        shard = rows.iloc[start : start + SHARD]
        key = _shard_key(stamps, cfg, shard, start, budget)
        for row, (captions, cut) in zip(
            shard.itertuples(), candidates(cfg, root, model, tokenizer, store, shard, start, budget, key)
        ):
            scored = score_captions(row.caption_ko, captions, cut, cfg.eval.primary_metric, facts)
            out += ranked_pairs(row.sample_id, captions, scored, s.min_margin, s.pairs_per_clip)
    pairs = pd.DataFrame(out, columns=PAIR_COLUMNS[:7])
    pairs, dropped = _encodable(pairs, tokenizer, cfg, store.get(rows.iloc[:1]).shape[1], model)
    log.info("%d preference pairs from %d clips (%d too long dropped)", len(pairs), len(rows), dropped)
    return with_reference(model, tokenizer, store, cfg, pairs, rows, others)


def candidates(cfg, root, model, tokenizer, store, shard: pd.DataFrame, start: int, budget: int, key: str) -> list:
    """[(captions, cut flags)] per clip of a shard: K sampled captions each, cached under `key` (_shard_key)."""
    s = cfg.prefer
    path = root / CACHE / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    features = store.get(shard)
    model.eval()
    out = []
    for i in range(len(shard)):
        texts, cut = generate(
            model,
            tokenizer,
            features[i : i + 1].repeat(s.candidates, 1, 1),
            cfg.model.prompt,
            budget,
            cfg.model.max_length,
            do_sample=True,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            repetition_penalty=s.repetition_penalty,
            seed=s.seed + start + i,
        )
        out.append([texts, cut])
    write_json(path, out)
    return out


def _shard_key(stamps: list, cfg: Config, shard: pd.DataFrame, start: int, budget: int) -> str:
    """What a shard's candidates depend on: the model files, the sampling params, the clips, the budget."""
    blob = json.dumps(
        [
            stamps,
            {k: v for k, v in cfg.section("prefer").items() if k in SAMPLING},
            cfg.section("model"),
            shard["sample_id"].tolist(),
            start,
            budget,
        ],
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _encodable(pairs: pd.DataFrame, tokenizer, cfg: Config, media_tokens: int, model) -> tuple[pd.DataFrame, int]:
    """Pairs whose both sides fit model.max_length (a sampled caption is never truncated either)."""
    keep, media = [], video_media(model, media_tokens)
    for i, row in pairs.iterrows():
        try:
            for text in (row.chosen, row.rejected):
                encode(tokenizer, cfg.model.prompt, text, media_tokens, cfg.model.max_length, row.sample_id, **media)
            keep.append(i)
        except SampleTooLong:
            continue
    return pairs.loc[keep].reset_index(drop=True), len(pairs) - len(keep)


def pair_logprobs(model, tokenizer, store, cfg: Config, take: pd.DataFrame, rows, others) -> tuple:
    """Sequence log-probabilities of the chosen and of the rejected captions of `take` on their clips, and
    with `others` (other_clips) of the chosen on another clip's video (else None), in one forward pass;
    and the tokens that pass saw."""
    features = store.get(rows.loc[take.sample_id])
    n, media = features.shape[1], video_media(model, features.shape[1])
    texts, videos = [*take.chosen, *take.rejected], [features, features]
    if others is not None:
        texts, videos = [*texts, *take.chosen], [*videos, store.get(others.loc[take.sample_id])]
    encoded = [encode(tokenizer, cfg.model.prompt, t, n, cfg.model.max_length, **media) for t in texts]
    logp = sequence_logprobs(model, encoded, torch.cat(videos), tokenizer.pad_token_id).split(len(take))
    return logp[0], logp[1], logp[2] if others is not None else None, sum(len(e) for e in encoded)


@torch.no_grad()
def reference_logprobs(model, tokenizer, store, cfg: Config, pairs: pd.DataFrame, rows, others) -> tuple[list, ...]:
    """The log-probabilities of pair_logprobs (chosen, rejected, chosen on another video: NaN without `others`)
    under the model as stage 2 left it, computed once, a pair at a time: `pair_accuracy` repeats exactly this
    computation, so an unchanged model ties (0.5), bit for bit."""
    model.eval()
    out = ([], [], [])
    for i in range(len(pairs)):
        *logp, _ = pair_logprobs(model, tokenizer, store, cfg, pairs.iloc[i : i + 1], rows, others)
        for column, value in zip(out, logp):
            column.append(float("nan") if value is None else float(value))
    return out


def with_reference(model, tokenizer, store, cfg: Config, pairs: pd.DataFrame, rows, others) -> pd.DataFrame:
    """`pairs` with their REF columns scored by reference_logprobs on `rows`' videos (and `others`')."""
    return pairs.assign(**dict(zip(REF, reference_logprobs(model, tokenizer, store, cfg, pairs, rows, others))))


def pair_loss(model, tokenizer, store, cfg: Config, take: pd.DataFrame, rows, others) -> tuple[torch.Tensor, dict, int]:
    """The DPO loss of a micro-batch of pairs, plus `video_weight` × the conditional term with `others`, its
    reward figures, and the tokens it saw."""
    chosen, rejected, chosen_other, tokens = pair_logprobs(model, tokenizer, store, cfg, take, rows, others)
    ref_c, ref_r, ref_o = (torch.tensor(take[c].values, dtype=torch.float32, device=chosen.device) for c in REF)
    loss, stats = dpo_loss(chosen, rejected, ref_c, ref_r, cfg.prefer.beta)
    if chosen_other is not None:
        video_loss, video = dpo_loss(chosen, chosen_other, ref_c, ref_o, cfg.prefer.beta)
        loss = loss + cfg.prefer.video_weight * video_loss
        stats |= {f"video_{k}": v for k, v in video.items()}  # video_reward_margin, video_preference_accuracy
    return loss, stats, tokens


@torch.no_grad()
def pair_accuracy(
    model, tokenizer, store, cfg: Config, pairs: pd.DataFrame, rows, others, key: str = "preference_accuracy"
) -> float | None:
    """Preference accuracy of the model's implicit reward on `pairs` (0.5 before any DPO step); with `key`
    video_preference_accuracy, how often it rewards the chosen on its own clip over on another's video."""
    if not len(pairs) or (key != "preference_accuracy" and others is None):
        return None
    model.eval()
    ranked = sum(
        pair_loss(model, tokenizer, store, cfg, pairs.iloc[i : i + 1], rows, others)[1][key] for i in range(len(pairs))
    )
    model.train()
    return ranked / len(pairs)
