"""The assemble stage: the base checkpoint every training stage starts from.

    kocap stage assemble        # -> models/base (LlavaNextVideo + Qwen3, fresh projector, tokenizer)

Production presets load CLIP ViT-L/14@336 and Qwen3 with `from_pretrained` (hub id or folder) and
add `<video>`/`<image>` to Qwen's tokenizer. The tiny preset has no pretrained LLM to load, so it
makes its stand-in here: a byte-level BPE tokenizer and a small Qwen3 pre-trained on the training
captions (text only: no video is seen, so grounding still has to be learned in stage 2).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import CLIPVisionModel, Qwen3ForCausalLM

from .. import paths
from ..config import Config
from ..io import write_json
from ..model.build import assemble, assemble_to_folder, tiny_text_config, tiny_vision_config
from ..model.presets import source
from ..model.sources import ensure_sources
from ..model.text import answer, load_tokenizer, train_tiny_tokenizer, user_turn
from .loop import host_peak_mb

log = logging.getLogger(__name__)


def run(cfg: Config, root: Path, env=None) -> dict:
    preset, out = cfg.model.chosen, root / paths.BASE
    ensure_sources(root, preset, offline=env is not None and env.hub_offline())
    shutil.rmtree(out, ignore_errors=True)
    lm_loss = None
    if preset.llm == "tiny":
        texts = corpus(root)
        tokenizer = train_tiny_tokenizer(
            texts + [user_turn(cfg.model.prompt)], out / "tokenizer", cfg.model.tiny_lm.vocab_size
        )
        torch.manual_seed(cfg.model.tiny_lm.seed)
        vision = CLIPVisionModel(tiny_vision_config(preset.image_size, preset.patch_size))  # random, frozen
        llm, lm_loss = pretrain_tiny_lm(tokenizer, texts, cfg)
        model = assemble(vision, llm, tokenizer, cfg.frames.num_frames)
        model.save_pretrained(out)
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
        params = sum(p.numel() for p in model.parameters())
    else:  # streamed shard by shard: host RAM stays far below the LLM's size
        tokenizer = load_tokenizer(source(root, preset.llm))
        params = assemble_to_folder(
            source(root, preset.vision),
            source(root, preset.llm),
            tokenizer,
            cfg.frames.num_frames,
            out,
            names=(preset.vision, preset.llm),
        )
    tokenizer.save_pretrained(out)
    report = {
        "preset": cfg.model.preset,
        "parameters_m": round(params / 1e6, 2),
        "vocab": len(tokenizer),
        "tiny_lm_final_loss": lm_loss,
        "peak_host_rss_mb": round(host_peak_mb()),
    }
    write_json(root / paths.ASSEMBLE_REPORT, report)
    return report


def corpus(root: Path) -> list[str]:
    """Training captions (train split) and image captions: what the tiny LM may read."""
    clips = pd.read_parquet(root / paths.VALID_CLIPS)
    images = pd.read_parquet(root / paths.VALID_IMAGES)
    return clips.loc[clips["split"] == "train", "caption_ko"].tolist() + images["caption_ko"].tolist()


def pretrain_tiny_lm(tokenizer, texts: list[str], cfg: Config) -> tuple[Qwen3ForCausalLM, float]:
    """Next-token training of a small Qwen3 on `caption<|im_end|>` sequences."""
    p = cfg.model.tiny_lm
    torch.manual_seed(p.seed)
    model = Qwen3ForCausalLM(tiny_text_config(len(tokenizer)))
    seqs = [tokenizer(answer(t), add_special_tokens=False)["input_ids"] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr)
    rng = np.random.default_rng(p.seed)
    losses = []
    model.train()
    for _ in range(p.pretrain_steps):
        batch = [seqs[i] for i in rng.choice(len(seqs), size=min(p.batch_size, len(seqs)), replace=False)]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for i, s in enumerate(batch):
            ids[i, : len(s)], labels[i, : len(s)] = torch.tensor(s), torch.tensor(s)
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    final = float(np.mean(losses[-20:]))
    log.info("tiny LM pre-trained: %d steps, final loss %.3f", p.pretrain_steps, final)
    return model, final
