"""Is a fact missing because the features lack it, or because the rest of the paragraph drowns it? (issue 18)

    kocap run                                                  # a project with models/base and models/align
    python benchmarks/loss_share.py PROJECT                    # stage 2 as kocap trains it: loss on every answer token
    python benchmarks/loss_share.py PROJECT only=color         # the same steps, loss on the colour words alone
    python benchmarks/loss_share.py PROJECT oracle=1           # the clip's facts, one-hot, in place of its features

Trains LoRA + projector from the project's base and stage-1 projector with kocap's own loss path
(`video_lm._model_inputs` / `answer_loss`, batch 8, AdamW, warm-up then linear decay, as stage 2), then
scores teacher-forced: at the first answer position that names a colour (object) word, is the true one
ranked first among the five colours (three objects)? Training clips (first 64) and every validation clip.
Prints one JSON line. `steps`, `lr`, `bs`, `r` (LoRA rank) are options; `only=color,obj` keeps the loss
on those words' tokens (every other label ignored); `fdrop=0.5` zeroes that share of each training clip's
video tokens before the projector (scaled up by the rest), drawn anew each step. About 45 s for 300 steps here.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a bare copy

from kocap import paths  # noqa: E402
from kocap.config import load_config  # noqa: E402
from kocap.data.rows import split_rows  # noqa: E402
from kocap.model.build import load_qlora  # noqa: E402
from kocap.model.features import FeatureStore  # noqa: E402
from kocap.model.text import IGNORE, load_tokenizer  # noqa: E402
from kocap.model.video_lm import _model_inputs, answer_loss, base_model, video_media  # noqa: E402
from kocap.sample.facts import FACTS, read_facts  # noqa: E402
from kocap.train.finetune import load_aligned_projector  # noqa: E402
from kocap.train.samples import encode_rows, warm_and_encode  # noqa: E402

WORDS = {"color": ["빨간색", "파란색", "노란색", "흰색", "보라색"], "obj": ["자동차", "공", "사람"]}


def word_ids(tokenizer) -> dict[str, list[int]]:
    """Each fact word as the one token it is after a space (checked: a split word would blur the score)."""
    out = {}
    for fact, words in WORDS.items():
        ids = [tokenizer.encode(" " + w, add_special_tokens=False) for w in words]
        assert all(len(i) == 1 for i in ids), f"{fact}: a word is more than one token: {ids}"
        out[fact] = [i[0] for i in ids]
    return out


def oracle(rows, like: torch.Tensor) -> torch.Tensor:
    """The clip's facts, one-hot (value 3), on every video token: perfect features."""
    out = torch.zeros_like(like)
    for i, caption in enumerate(rows["caption_ko"]):
        facts, k = read_facts(caption), 0
        for attr, values in FACTS.items():
            for value in values:
                out[i, :, k] = 3.0 * (facts[attr] == value)
                k += 1
    return out


def keep_only(labels: torch.Tensor, ids: list[int]) -> torch.Tensor:
    keep = torch.zeros_like(labels, dtype=torch.bool)
    for t in ids:
        keep |= labels == t
    return torch.where(keep, labels, torch.full_like(labels, IGNORE))


def dropped(features: torch.Tensor, share: float) -> torch.Tensor:
    if not share:
        return features
    keep = torch.rand(features.shape[0], features.shape[1], 1) >= share
    return features * keep / (1 - share)


@torch.no_grad()
def ranked_first(model, encoded, features, pad_id: int, ids: dict) -> dict[str, float]:
    hits = {fact: [] for fact in ids}
    for s in range(0, len(encoded), 16):
        labels, inputs = _model_inputs(model, encoded[s : s + 16], features[s : s + 16], pad_id)
        base = base_model(model)
        logits = base.lm_head(base.model(**inputs).last_hidden_state[:, :-1])
        targets = labels[:, 1:]
        for i in range(targets.shape[0]):
            for fact, choices in ids.items():
                where = [p for p in (targets[i] != IGNORE).nonzero()[:, 0].tolist() if targets[i, p].item() in choices]
                if where:
                    p = where[0]
                    hits[fact].append(choices[int(logits[i, p, choices].argmax())] == targets[i, p].item())
    return {fact: round(float(np.mean(v)), 3) for fact, v in hits.items()}


def main(root: Path, opts: dict) -> dict:
    steps, lr, bs = int(opts.get("steps", 300)), float(opts.get("lr", 1e-3)), int(opts.get("bs", 8))
    rank, drop = int(opts.get("r", 64)), float(opts.get("fdrop", 0))
    cfg = load_config(root / "params.yaml")
    tokenizer = load_tokenizer(str(root / paths.BASE))
    torch.manual_seed(0)
    model = load_qlora(root / paths.BASE, rank, rank)
    load_aligned_projector(model, root)
    store = FeatureStore(model, root)
    train, rows, _ = warm_and_encode(split_rows(root), store, tokenizer, cfg)
    n = store.get(rows.iloc[:1]).shape[1]
    val, vrows, _ = encode_rows(split_rows(root, "val"), tokenizer, cfg, n, **video_media(model, n))
    store.warm(vrows)
    feats, vfeats = store.get(rows), store.get(vrows)
    if int(opts.get("oracle", 0)):
        feats, vfeats = oracle(rows, feats), oracle(vrows, vfeats)
    ids = word_ids(tokenizer)
    only = [t for fact in opts["only"].split(",") for t in ids[fact]] if opts.get("only") else None

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1, (s + 1) / 20) * max(0.0, 1 - s / steps))
    order, shuffle, start = [], torch.Generator().manual_seed(0), time.perf_counter()
    model.train()
    for _ in range(steps):
        if not order:
            order = torch.randperm(len(train), generator=shuffle).tolist()
        take, order = order[:bs], order[bs:]
        labels, inputs = _model_inputs(
            model, [train[i] for i in take], dropped(feats[take], drop), tokenizer.pad_token_id
        )
        value = answer_loss(model, keep_only(labels, only) if only else labels, **inputs)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    return {
        "options": opts,
        "train_clips": len(train),
        "val_clips": len(val),
        "final_loss": round(value.item(), 3),
        "seconds": round(time.perf_counter() - start),
        "train": ranked_first(model, train[:64], feats[:64], tokenizer.pad_token_id, ids),
        "val": ranked_first(model, val, vfeats, tokenizer.pad_token_id, ids),
        "chance": {fact: round(1 / len(w), 3) for fact, w in WORDS.items()},
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), dict(a.split("=", 1) for a in sys.argv[2:])), ensure_ascii=False))
