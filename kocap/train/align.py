"""Stage 1 (align): only the projector trains; the tower and the LLM are frozen. With a new LLM the
projector starts from random, so this stage is what first maps CLIP features into Qwen3's space.

    kocap stage align           # -> models/align/projector.safetensors, reports/align.json

Data: the Korean image-caption set through the model family's image path (LLaVA-NeXT-Video: AnyRes;
Video-LLaVA: its image tower), plus, with
`stage1.include_videos`, the training video captions (their cached pooled features).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from .. import paths
from ..config import Config
from ..data.rows import split_rows
from ..io import write_json
from ..model import runtime
from ..model.build import load_base, ready_to_train
from ..model.family import Family, family_of, stage1_skip_reason
from ..model.features import FeatureStore
from ..model.presets import image_tokens
from ..model.text import IMAGE, SampleTooLong, encode, load_tokenizer
from ..model.video_lm import answer_loss
from ..model.video_lm import loss as video_loss
from .loop import plan, run_params, run_signature, weight_files
from .samples import warm_and_encode
from .tracking import train_tracked

log = logging.getLogger(__name__)


def run(cfg: Config, root: Path, env=None) -> dict:
    s = cfg.stage1
    if not s.enabled:
        return skip(root)
    reason = stage1_skip_reason(cfg.model.chosen, cfg.model.preset)
    if reason:
        return skip(root, reason)
    dev = runtime.device()
    prec = runtime.precision(s.precision, dev)
    tokenizer = load_tokenizer(str(root / paths.BASE))
    model = load_frozen(root / paths.BASE, prec, dev)
    items, dropped = image_items(cfg, root, tokenizer, model)
    image_size, fam = model.config.vision_config.image_size, family_of(model.config)
    store = videos = None
    if s.include_videos:
        store = FeatureStore(model, root)
        encoded, rows, dropped_videos = warm_and_encode(split_rows(root), store, tokenizer, cfg)
        dropped += dropped_videos
        videos = (encoded, rows)
        items += [("video", i) for i in range(len(rows))]
    signature = run_signature(
        run_params(cfg.section("stage1")), cfg.section("model"), len(items), files=weight_files(root / paths.BASE)
    )
    schedule, spec = plan(len(items), s, root / paths.ALIGN / "checkpoints", signature, prec, dev)

    def batch(micro: int):
        chosen = [items[i] for i in schedule.indices(micro)]
        losses, tokens = [], 0
        for kind, payload in chosen:
            if kind == "image":
                ids, labels, media = image_inputs(root, payload, image_size, fam)
                media = {k: v.to(dev, model.dtype if v.is_floating_point() else None) for k, v in media.items()}
                losses.append(answer_loss(model, labels.to(dev), input_ids=ids.to(dev), **media))
                tokens += ids.shape[1]
            else:
                enc, rows = videos
                value, n = video_loss(model, [enc[payload]], store.get(rows.iloc[[payload]]), tokenizer.pad_token_id)
                losses.append(value)
                tokens += n
        return torch.stack(losses).mean(), len(chosen), tokens

    def save():
        (root / paths.ALIGN).mkdir(parents=True, exist_ok=True)
        state = model.model.multi_modal_projector.state_dict()
        save_file({k: v.float().contiguous() for k, v in state.items()}, root / paths.ALIGN / "projector.safetensors")

    result = train_tracked(
        cfg, "align", root, model, batch, spec, root / paths.ALIGN_PLOT, save, getattr(env, "track", True)
    )
    report = {
        **result,
        "images": sum(k == "image" for k, _ in items),
        "videos": sum(k == "video" for k, _ in items),
        "dropped_too_long": dropped,
        "precision": prec,
        "device": dev,
    }
    write_json(root / paths.ALIGN_REPORT, report)
    return report


def skip(root: Path, reason: str = "stage1.enabled is false: stage 2 starts from the assembled projector") -> dict:
    """Stage 1 switched off (`stage1.enabled: false`) or not needed (an aligned family): no aligned projector,
    so stage 2 starts from the assembled one; the outputs say so (and the registered version's `stage1` tag)."""
    import shutil

    from .tracking import loss_plot

    shutil.rmtree(root / paths.ALIGN, ignore_errors=True)
    (root / paths.ALIGN).mkdir(parents=True)
    report = {"skipped": True, "reason": reason}
    write_json(root / paths.ALIGN / "stage1.json", report)
    loss_plot([], root / paths.ALIGN_PLOT, "align: stage 1 skipped")
    write_json(root / paths.ALIGN_REPORT, report)
    return report


def load_frozen(base_dir: Path, prec: str, dev: str):
    """The base model with only the projector trainable (in fp32). On a GPU the frozen LLM is 4-bit nf4
    (a T4 holds neither an 8B LLM in fp16 nor its activations otherwise) with gradient checkpointing:
    the projector sits at the input, so its gradient flows back through every LLM layer."""
    model = load_base(base_dir, prec, dev, quantize=dev == "cuda")
    for name, p in model.named_parameters():
        p.requires_grad_(".multi_modal_projector." in name)
    return ready_to_train(model, dev)


def image_items(cfg: Config, root: Path, tokenizer, model) -> tuple[list, int]:
    """("image", (encoded, path, height, width)) per stage-1 image, for as many `<image>` tokens as the model
    consumes; pixels are decoded per micro-batch (`image_inputs`), so host memory hardly grows with the
    image count (AnyRes at 336 px is up to 6.8 MB of float32 an image: terabytes for MS-COCO). An image over
    `stage1.max_length` follows `model.too_long` (an error naming it, or a counted drop)."""
    from PIL import Image

    table = pd.read_parquet(root / paths.VALID_IMAGES)
    items, dropped = [], 0
    for _, row in table.iterrows():
        with Image.open(root / row["image_path"]) as im:
            w, h = im.size  # read from the header: nothing is decoded here
        try:
            enc = encode(
                tokenizer,
                cfg.model.prompt,
                row["caption_ko"],
                image_tokens(model.config, h, w),
                cfg.stage1.max_length,
                row["sample_id"],
                media=IMAGE,
            )
        except SampleTooLong:
            if cfg.model.too_long == "error":
                raise
            dropped += 1
            continue
        items.append(("image", (enc, row["image_path"], h, w)))
    if dropped:
        log.warning(
            "%d image(s) longer than stage1.max_length=%d dropped (never truncated)", dropped, cfg.stage1.max_length
        )
    return items, dropped


def image_inputs(root: Path, item: tuple, size: int, fam: Family) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One image item's model inputs, decoded now: (ids, labels, the family's pixel inputs: for
    LLaVA-NeXT-Video AnyRes `pixel_values` and `image_sizes` [[height, width]])."""
    from PIL import Image

    enc, image_path, h, w = item
    with Image.open(root / image_path) as im:
        img = np.asarray(im.convert("RGB"))
    if img.shape[:2] != (h, w):
        raise ValueError(f"{image_path} changed size during stage 1 ({h}x{w} -> {img.shape[0]}x{img.shape[1]})")
    return torch.tensor([enc.input_ids]), torch.tensor([enc.labels]), fam.image_inputs(img, size)
