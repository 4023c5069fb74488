"""Stage 2 (finetune): QLoRA on the video captions. The LLM is 4-bit nf4 with LoRA on its linear
layers, the projector trains in full precision, the tower stays frozen (its pooled features come
from the cache).

    kocap stage finetune        # -> models/finetune/adapter (LoRA + projector), reports/finetune.json

Kill it at any point and run it again: it resumes from the last checkpoint in
models/finetune/checkpoints and ends after the same number of steps. With `stage2.enabled: false` it
trains nothing and saves the untrained adapter (zero-shot: the base with stage 1's projector).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from .. import paths
from ..config import Config
from ..data.rows import split_rows
from ..io import write_json
from ..model import runtime
from ..model.build import load_qlora
from ..model.family import pretrained
from ..model.features import FeatureStore
from ..model.text import load_tokenizer
from ..model.video_lm import base_model, loss
from .loop import plan, run_params, run_signature, weight_files
from .samples import warm_and_encode
from .tracking import train_tracked


def run(cfg: Config, root: Path, env=None) -> dict:
    s = cfg.stage2
    dev = runtime.device()
    prec = runtime.precision(s.precision, dev)
    tokenizer = load_tokenizer(str(root / paths.BASE))
    torch.manual_seed(s.seed)  # LoRA's initial weights: the same run gives the same model
    model = load_qlora(root / paths.BASE, s.lora_r, s.lora_alpha, prec, dev)
    load_aligned_projector(model, root)
    if s.gradient_checkpointing and dev == "cuda":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not s.enabled:
        return zero_shot(model, tokenizer, root, prec, dev, pretrained(cfg.model.chosen))
    store = FeatureStore(model, root)
    encoded, rows, dropped = warm_and_encode(split_rows(root), store, tokenizer, cfg)
    schedule, spec = plan(len(rows), s, root / paths.FINETUNE / "checkpoints", signature(cfg, rows, root), prec, dev)

    def batch(micro: int):
        take = schedule.indices(micro)
        value, tokens = loss(model, [encoded[i] for i in take], store.get(rows.iloc[take]), tokenizer.pad_token_id)
        return value, len(take), tokens

    def save():
        model.save_pretrained(root / paths.FINETUNE / "adapter")
        tokenizer.save_pretrained(root / paths.FINETUNE / "adapter")

    result = train_tracked(
        cfg, "finetune", root, model, batch, spec, root / paths.FINETUNE_PLOT, save, getattr(env, "track", True)
    )
    report = {
        **result,
        "samples": len(rows),
        "dropped_too_long": dropped,
        "precision": prec,
        "device": dev,
        "batch_size": s.batch_size,
        "grad_accum": s.grad_accum,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    write_json(root / paths.FINETUNE_REPORT, report)
    return report


def zero_shot(model, tokenizer, root: Path, prec: str, dev: str, from_checkpoint: bool = False) -> dict:
    """`stage2.enabled: false`: the untrained adapter, saved as it is. PEFT starts LoRA's B at zero, so the
    adapter is the identity on the 4-bit LLM, and its projector is stage 1's (or the assembled one): the
    version measures the base itself. Checkpoints of a trained run are kept, so switching back resumes it."""
    from .tracking import loss_plot

    model.save_pretrained(root / paths.FINETUNE / "adapter")
    tokenizer.save_pretrained(root / paths.FINETUNE / "adapter")
    loss_plot([], root / paths.FINETUNE_PLOT, "finetune: zero-shot, nothing trained")
    if from_checkpoint:
        projector = "pretrained"  # the checkpoint's own projector (merger): the version is the download as it is
    else:
        projector = "stage 1" if (root / paths.ALIGNED_PROJECTOR).exists() else "assembled"
    report = {
        "skipped": True,
        "reason": f"stage2.enabled is false: zero-shot (identity LoRA, {projector} projector)",
        "steps": 0,
        "projector": projector,
        "precision": prec,
        "device": dev,
    }
    write_json(root / paths.FINETUNE_REPORT, report)
    return report


def signature(cfg: Config, rows: pd.DataFrame, root: Path) -> str:
    return run_signature(
        run_params(cfg.section("stage2")),
        cfg.section("model"),
        rows["sample_id"].tolist(),
        rows["shard"].tolist(),
        files=(*weight_files(root / paths.BASE), root / paths.ALIGNED_PROJECTOR),
    )


def load_aligned_projector(model, root: Path) -> bool:
    """Start from the stage-1 projector when there is one (both the frozen and the trainable copy)."""
    path = root / paths.ALIGNED_PROJECTOR
    if not path.exists():
        return False
    from safetensors.torch import load_file

    state = load_file(path)
    projector = base_model(model).model.multi_modal_projector
    targets = (
        [projector.original_module, projector.modules_to_save["default"]]
        if hasattr(projector, "modules_to_save")
        else [projector]
    )
    for module in targets:
        module.load_state_dict(state)
    return True
