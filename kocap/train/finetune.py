"""Stage 2 (finetune): QLoRA on the video captions. The LLM is 4-bit nf4 with LoRA on its linear
layers, the projector trains in full precision, the tower stays frozen (its pooled features come
from the cache).

    kocap stage finetune        # -> models/finetune/adapter (LoRA + projector), reports/finetune.json

Kill it at any point and run it again: it resumes from the last checkpoint in
models/finetune/checkpoints and ends after the same number of steps.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from ..config import Config
from ..data.frames import OUT as FRAMES
from ..data.validate import CLIPS_OUT
from ..io import write_json
from ..model import runtime
from ..model.build import load_qlora
from ..model.text import SampleTooLong, encode, load_tokenizer
from .assemble import OUT as BASE
from .features import FeatureStore
from .loop import EpochSchedule, LoopSpec, run_signature, weight_files
from .tracking import train_tracked
from .video_lm import base_model, loss

log = logging.getLogger(__name__)
OUT = "models/finetune"
PROJECTOR = "models/align/projector.safetensors"
REPORT = "reports/finetune.json"
PLOT = "reports/finetune_loss.png"


def training_rows(root: Path, split: str = "train") -> pd.DataFrame:
    """Frames index rows of a split joined with their captions."""
    index = pd.read_parquet(root / FRAMES / "clips.parquet")
    captions = pd.read_parquet(root / CLIPS_OUT)[["sample_id", "caption_ko"]]
    return index[index["split"] == split].merge(captions, on="sample_id").reset_index(drop=True)


def encode_rows(rows: pd.DataFrame, tokenizer, cfg: Config, media_tokens: int) -> tuple[list, pd.DataFrame, int]:
    """Encode every sample; a too-long one is an error naming it, or a counted drop (model.too_long)."""
    encoded, keep, dropped = [], [], 0
    for i, row in rows.iterrows():
        try:
            encoded.append(encode(tokenizer, cfg.model.prompt, row["caption_ko"], media_tokens, cfg.model.max_length,
                                  row["sample_id"]))
            keep.append(i)
        except SampleTooLong:
            if cfg.model.too_long == "error":
                raise
            dropped += 1
    if dropped:
        log.warning("%d sample(s) longer than model.max_length=%d dropped (never truncated)", dropped, cfg.model.max_length)
    return encoded, rows.loc[keep].reset_index(drop=True), dropped


def run(cfg: Config, root: Path, env=None) -> dict:
    s = cfg.stage2
    dev = runtime.device()
    prec = runtime.precision(s.precision, dev)
    tokenizer = load_tokenizer(str(root / BASE))
    torch.manual_seed(s.seed)  # LoRA's initial weights: the same run gives the same model
    model = load_qlora(root / BASE, s.lora_r, s.lora_alpha, prec, dev)
    load_aligned_projector(model, root)
    if s.gradient_checkpointing and dev == "cuda":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    rows = training_rows(root)
    store = FeatureStore(model, root)
    store.warm(rows)
    media = store.get(rows.iloc[:1]).shape[1]
    encoded, rows, dropped = encode_rows(rows, tokenizer, cfg, media)
    schedule = EpochSchedule(len(rows), s.batch_size, s.epochs, s.seed)
    spec = LoopSpec(steps=-(-schedule.micro_batches // s.grad_accum), lr=s.lr, checkpoint_every=s.checkpoint_every,
                    checkpoint_dir=root / OUT / "checkpoints", signature=signature(cfg, rows, root), precision=prec,
                    accum=s.grad_accum, micro_batches=schedule.micro_batches, device=dev)

    def batch(micro: int):
        take = schedule.indices(micro)
        value, tokens = loss(model, [encoded[i] for i in take], store.get(rows.iloc[take]), tokenizer.pad_token_id)
        return value, len(take), tokens

    def save():
        model.save_pretrained(root / OUT / "adapter")
        tokenizer.save_pretrained(root / OUT / "adapter")

    result = train_tracked(cfg, "finetune", root, model, batch, spec, root / PLOT, save, getattr(env, "track", True))
    report = {**result, "samples": len(rows), "dropped_too_long": dropped, "precision": prec, "device": dev,
              "batch_size": s.batch_size, "grad_accum": s.grad_accum,
              "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    write_json(root / REPORT, report)
    return report


def signature(cfg: Config, rows: pd.DataFrame, root: Path) -> str:
    return run_signature(cfg.section("stage2"), cfg.section("model"), rows["sample_id"].tolist(), rows["shard"].tolist(),
                         files=(*weight_files(root / BASE), root / PROJECTOR))


def load_aligned_projector(model, root: Path) -> bool:
    """Start from the stage-1 projector when there is one (both the frozen and the trainable copy)."""
    path = root / PROJECTOR
    if not path.exists():
        return False
    from safetensors.torch import load_file

    state = load_file(path)
    projector = base_model(model).model.multi_modal_projector
    targets = [projector.original_module, projector.modules_to_save["default"]] if hasattr(projector, "modules_to_save") \
        else [projector]
    for module in targets:
        module.load_state_dict(state)
    return True
