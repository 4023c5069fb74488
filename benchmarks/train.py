"""Stage-2 training throughput on this CPU, tiny preset: with the frozen-tower feature cache vs
running the tower on every step (what training without a cache does).

    make demo                      # first: it builds data/frames and models/base
    .venv/bin/python benchmarks/train.py [--steps 30]

Prints median samples/s of each and the ratio (cache / no cache), measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from kocap import paths
from kocap.config import load_config
from kocap.data.rows import frame_reader, split_rows
from kocap.model.build import load_qlora
from kocap.model.features import FeatureStore
from kocap.model.text import load_tokenizer
from kocap.model.video_lm import loss, pooled_features
from kocap.train.samples import warm_and_encode


def frames_of(root: Path, rows) -> np.ndarray:
    read = frame_reader(root, rows)  # each shard mapped once
    return np.stack([read(i) for i in range(len(rows))])


def measure(model, step_features, encoded, rows, batch: int, steps: int, pad: int) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rates = []
    for step in range(steps + 2):  # two warm-up steps
        take = np.arange(step * batch, (step + 1) * batch) % len(rows)
        t = time.perf_counter()
        value, _ = loss(model, [encoded[i] for i in take], step_features(rows.iloc[take]), pad)
        value.backward()
        opt.step()
        opt.zero_grad()
        if step >= 2:
            rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=".")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    root = Path(args.root)
    cfg = load_config(root / "params.yaml")
    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(root / paths.BASE))
    model = load_qlora(root / paths.BASE, cfg.stage2.lora_r, cfg.stage2.lora_alpha)
    store = FeatureStore(model, root)
    encoded, rows, _ = warm_and_encode(split_rows(root), store, tokenizer, cfg)
    b = cfg.stage2.batch_size
    cached = measure(model, store.get, encoded, rows, b, args.steps, tokenizer.pad_token_id)
    uncached = measure(
        model,
        lambda r: pooled_features(model, frames_of(root, r)),
        encoded,
        rows,
        b,
        args.steps,
        tokenizer.pad_token_id,
    )
    print(
        f"stage 2, tiny preset, batch {b}, {args.steps} steps each: with feature cache {cached:.1f} samples/s | "
        f"tower every step {uncached:.1f} samples/s | ratio {cached / uncached:.2f}x"
    )


if __name__ == "__main__":
    main()
