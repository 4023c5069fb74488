"""The assemble stage: the base checkpoint every training stage starts from.

    kocap stage assemble        # -> models/base (the preset's family + Qwen3, fresh projector, tokenizer)

Production presets load CLIP ViT-L/14@336 and Qwen3 with `from_pretrained` (hub id or folder) and
add `<video>`/`<image>` to Qwen's tokenizer. The tiny preset has no pretrained LLM to load, so it
makes its stand-in here: a byte-level BPE tokenizer and a small Qwen3 pre-trained on the training
captions in the chat format (text only: no video is seen, so grounding still has to be learned in
stage 2), and its CLIP stand-in: a tiny tower pre-trained on training frames and stills the sample's
generator renders (`model.tiny_tower.generated_frames`) to tell which words their caption uses, frozen
afterwards as CLIP is.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import Qwen3ForCausalLM

from .. import paths
from ..config import Config
from ..data.rows import frame_reader, split_rows
from ..io import write_json
from ..model.build import assemble, assemble_to_folder, tiny_text_config
from ..model.family import family, family_of, pretrained
from ..model.preprocess import resize_crop
from ..model.presets import source
from ..model.sources import ensure_sources
from ..model.text import add_tokens, answer, load_tokenizer, train_tiny_tokenizer, user_turn
from ..sample.captions import describe
from ..sample.scene import draw_scene, render
from .loop import host_peak_mb

log = logging.getLogger(__name__)


def run(cfg: Config, root: Path, env=None) -> dict:
    preset, out = cfg.model.chosen, root / paths.BASE
    fam = family(preset.family)
    ensure_sources(root, preset, offline=env is not None and env.hub_offline())
    shutil.rmtree(out, ignore_errors=True)
    lm_loss = tower_loss = None
    if preset.llm == "tiny":
        texts = corpus(root)
        tokenizer = add_tokens(
            train_tiny_tokenizer(
                texts + [user_turn(cfg.model.prompt)], out / "tokenizer", cfg.model.tiny_lm.vocab_size
            ),
            fam.special_tokens,
        )
        torch.manual_seed(cfg.model.tiny_lm.seed)
        text = tiny_text_config(len(tokenizer))
        vision = fam.tiny_tower_class(fam.tiny_vision_config(preset.image_size, preset.patch_size, text))  # random
        llm, lm_loss = pretrain_tiny_lm(tokenizer, texts, cfg)
        model = assemble(vision, llm, tokenizer, cfg.frames.num_frames, fam)
        tower_loss = pretrain_tiny_tower(model, split_rows(root, "train"), tokenizer, root, cfg)
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
            fam=fam,
            image_size=preset.image_size,
            whole=pretrained(preset),
        )
    tokenizer.save_pretrained(out)
    report = {
        "preset": cfg.model.preset,
        "family": fam.tag,
        "parameters_m": round(params / 1e6, 2),
        "vocab": len(tokenizer),
        "tiny_lm_final_loss": lm_loss,
        "tiny_tower_final_loss": tower_loss,
        "peak_host_rss_mb": round(host_peak_mb()),
    }
    write_json(root / paths.ASSEMBLE_REPORT, report)
    return report


def corpus(root: Path) -> list[str]:
    """Training captions (train split) and image captions: what the tiny LM may read."""
    return training_captions(root) + pd.read_parquet(root / paths.VALID_IMAGES)["caption_ko"].tolist()


def training_captions(root: Path) -> list[str]:
    clips = pd.read_parquet(root / paths.VALID_CLIPS)
    return clips.loc[clips["split"] == "train", "caption_ko"].tolist()


def pretrain_tiny_lm(tokenizer, texts: list[str], cfg: Config) -> tuple[Qwen3ForCausalLM, float]:
    """Next-token training of a small Qwen3 on chat turns: the user turn, then `caption<|im_end|>`."""
    p = cfg.model.tiny_lm
    torch.manual_seed(p.seed)
    model = Qwen3ForCausalLM(tiny_text_config(len(tokenizer)))
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr)
    rng = np.random.default_rng(p.seed)
    seqs = [chat_sequence(tokenizer, t, cfg.model.prompt) for t in texts]
    losses = []
    model.train()
    for _ in range(p.pretrain_steps):
        batch = [seqs[i] for i in rng.choice(len(seqs), size=min(p.batch_size, len(seqs)), replace=False)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (seq, lab) in enumerate(batch):
            ids[i, : len(seq)], labels[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), torch.tensor(lab), 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    final = float(np.mean(losses[-20:]))
    log.info("tiny LM pre-trained: %d steps, final loss %.3f", p.pretrain_steps, final)
    return model, final


class GeneratedStills:
    """`n` stills of scenes the embedded sample's generator draws and renders as it does the sample's clips,
    each with its caption: frame(i) is rendered on first use (preprocessed as clip frames are), so a short
    pre-training renders only what it draws. Still i depends on (seed, i) alone, from a stream of its own
    (the sample's clips are seeded [data.sample.seed, i]; still i [seed, i, 1], 2 and 3: scene, caption, render)."""

    def __init__(self, n: int, cfg: Config, image_size: int, seed: int):
        self.sample, self.image_size, self.seed = cfg.data.sample, image_size, seed
        self.scenes = [draw_scene(np.random.default_rng([seed, i, 1])) for i in range(n)]
        self.captions = [describe(s, np.random.default_rng([seed, i, 2])) for i, s in enumerate(self.scenes)]
        self._frames: dict[int, np.ndarray] = {}

    def frame(self, i: int) -> np.ndarray:
        if i not in self._frames:
            s, rng = self.sample, np.random.default_rng([self.seed, i, 3])
            clip = render(self.scenes[i], s.size, s.num_frames, rng)
            self._frames[i] = resize_crop(clip[[rng.integers(s.num_frames)]], self.image_size)[0]
        return self._frames[i]


def chat_sequence(tokenizer, caption: str, prompt: str) -> tuple[list[int], list[int]]:
    """(ids, labels) of one pre-training turn: the user turn with its media slot empty, then the answer;
    labels -100 on the prompt, as in stage 2, so the LM learns to answer that prompt in the captions' words."""
    before = tokenizer(user_turn(prompt, ""), add_special_tokens=False)["input_ids"]
    after = tokenizer(answer(caption), add_special_tokens=False)["input_ids"]
    return before + after, [-100] * len(before) + after


def pretrain_tiny_tower(model, rows: pd.DataFrame, tokenizer, root: Path, cfg: Config) -> float | None:
    """The tiny tower's stand-in for CLIP's image-text pre-training: single training frames and generated
    stills (GeneratedStills: on the 240-clip sample of 2026-12-07, its 198 training clips alone left weather,
    object, row and camera weak in the features; README), through the path the LM's features take (layer -2,
    the family's per-frame reduction), averaged, predict which words their caption uses (bag of words, a
    linear head dropped afterwards).
    Stage 2 keeps the tower frozen as always; a family's separate image tower gets the same weights."""
    p = cfg.model.tiny_tower
    if not p.pretrain_steps or rows.empty:
        return None
    inner = model.model
    fam = family_of(inner.config)
    tower = getattr(inner, fam.video_tower)
    features_width = fam.feature_width(inner.config)
    stills = GeneratedStills(p.generated_frames, cfg, cfg.model.chosen.image_size, p.seed)
    captions = [*rows["caption_ko"], *stills.captions]
    targets = torch.zeros(len(captions), len(tokenizer))
    for i, ids in enumerate(tokenizer(captions, add_special_tokens=False)["input_ids"]):  # one batched call
        targets[i, sorted(set(ids))] = 1
    varying = (targets.mean(0) > 0) & (targets.mean(0) < 1)  # a word every caption uses tells nothing
    targets = targets[:, varying]
    head = torch.nn.Linear(features_width, targets.shape[1])
    tower.requires_grad_(True)
    params = [*tower.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=p.lr)
    rng = np.random.default_rng(p.seed)
    losses = []
    read = frame_reader(root, rows)

    def frame(i: int) -> np.ndarray:  # a training clip's frame at random, or a generated still
        return read(i)[rng.integers(cfg.frames.num_frames)] if i < len(rows) else stills.frame(i - len(rows))

    for _ in range(p.pretrain_steps):
        clips = rng.choice(len(captions), size=min(p.batch_size, len(captions)), replace=False)
        frames = np.stack([frame(c) for c in clips])
        pooled = fam.still_features(inner, frames)
        loss = F.binary_cross_entropy_with_logits(head(pooled.mean(1)), targets[clips])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    tower.requires_grad_(False)
    for other in fam.towers(inner):  # a separate image tower (Video-LLaVA) starts from the same pre-training
        other.load_state_dict(tower.state_dict())
    final = float(np.mean(losses[-20:]))
    log.info("tiny tower pre-trained: %d steps, final loss %.4f", p.pretrain_steps, final)
    return final
