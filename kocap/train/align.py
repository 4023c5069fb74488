"""Stage 1 (align): only the projector trains; the tower and the LLM are frozen. With a new LLM the
projector starts from random, so this stage is what first maps CLIP features into Qwen3's space.

    kocap stage align           # -> models/align/projector.safetensors, reports/align.json

Data: the Korean image-caption set through the model's image (AnyRes) path, plus, with
`stage1.include_videos`, the training video captions (their cached pooled features).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from transformers import LlavaNextVideoForConditionalGeneration

from ..config import Config
from ..data.validate import IMAGES_OUT
from ..io import write_json
from ..model.presets import image_tokens
from ..model.preprocess import anyres
from ..model.text import IMAGE, encode, load_tokenizer
from .assemble import OUT as BASE
from .features import FeatureStore
from .finetune import encode_rows, training_rows
from .loop import LoopSpec, run_signature
from .tracking import train_tracked
from .video_lm import loss as video_loss

OUT = "models/align"
REPORT = "reports/align.json"
PLOT = "reports/align_loss.png"


def run(cfg: Config, root: Path, env=None) -> dict:
    s = cfg.stage1
    tokenizer = load_tokenizer(str(root / BASE))
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(root / BASE, dtype=torch.float32)
    for name, p in model.named_parameters():
        p.requires_grad_(".multi_modal_projector." in name)
    items = image_items(cfg, root, tokenizer, model)
    store = videos = None
    if s.include_videos:
        rows = training_rows(root)
        store = FeatureStore(model, root)
        store.warm(rows)
        encoded, rows, _ = encode_rows(rows, tokenizer, cfg, store.get(rows.iloc[:1]).shape[1])
        videos = (encoded, rows)
        items += [("video", i) for i in range(len(rows))]
    per_epoch = math.ceil(len(items) / s.batch_size)
    spec = LoopSpec(steps=per_epoch * s.epochs, lr=s.lr, checkpoint_every=s.checkpoint_every,
                    checkpoint_dir=root / OUT / "checkpoints", signature=run_signature(cfg.section("stage1"), cfg.section("model"), len(items),
                                                  files=(root / BASE / "model.safetensors",)))

    def batch(step: int):
        epoch, pos = divmod(step, per_epoch)
        order = np.random.default_rng([s.seed, epoch]).permutation(len(items))
        chosen = [items[i] for i in order[pos * s.batch_size : (pos + 1) * s.batch_size]]
        losses, tokens = [], 0
        for kind, payload in chosen:
            if kind == "image":
                ids, labels, pixels, size = payload
                out = model(input_ids=ids, pixel_values=pixels, image_sizes=size, labels=labels)
                losses.append(out.loss)
                tokens += ids.shape[1]
            else:
                enc, rows = videos
                value, n = video_loss(model, [enc[payload]], store.get(rows.iloc[[payload]]), tokenizer.pad_token_id)
                losses.append(value)
                tokens += n
        return torch.stack(losses).mean(), len(chosen), tokens

    def save():
        (root / OUT).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.model.multi_modal_projector.state_dict().items()},
                  root / OUT / "projector.safetensors")

    result = train_tracked(cfg, "align", root, model, batch, spec, root / PLOT, save)
    report = {**result, "images": sum(k == "image" for k, _ in items), "videos": sum(k == "video" for k, _ in items)}
    write_json(root / REPORT, report)
    return report


def image_items(cfg: Config, root: Path, tokenizer, model) -> list:
    """(ids, labels, AnyRes pixels, size) per stage-1 image, `<image>` expanded to what the model consumes."""
    from PIL import Image

    table = pd.read_parquet(root / IMAGES_OUT)
    size = model.config.vision_config.image_size
    items = []
    for _, row in table.iterrows():
        with Image.open(root / row["image_path"]) as im:
            img = np.asarray(im.convert("RGB"))
        h, w = img.shape[:2]
        enc = encode(tokenizer, cfg.model.prompt, row["caption_ko"], image_tokens(model.config, h, w),
                     cfg.model.max_length, row["sample_id"], media=IMAGE)
        items.append(("image", (torch.tensor([enc.input_ids]), torch.tensor([enc.labels]),
                                torch.from_numpy(anyres(img, size))[None], torch.tensor([[h, w]]))))
    return items


