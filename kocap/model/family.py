"""Model families: what differs between the video-language architectures kocap trains, in one place.

    fam = family(preset.family)         # by name, from params.yaml
    fam = family_of(model.config)       # from a saved or loaded model (its config's model_type)

Training, evaluation, serving and the registry ask the family (tower, features per frame, image path,
config, what stays unquantized) and never branch on its name. Both families here take a CLIP-style
tower, a two-layer projector and a Qwen3 LLM with Qwen's ChatML (`text.py`), and keep one frames path
(`data/video.py`); what differs:

| | llava-next-video | video-llava |
|---|---|---|
| transformers class | LlavaNextVideoForConditionalGeneration | VideoLlavaForConditionalGeneration |
| tokens per frame | (S/p)^2 / 4 (CLS dropped, 2x2 pooled): 144 at 336 px | (S/p)^2 + 1 (CLS kept): 257 at 224 px |
| towers | one, for images and videos | a video tower and an image tower (separate weights), one projector |
| images (stage 1) | AnyRes tiles + thumbnail, unpadded, newline per row | one S x S crop, CLS dropped: (S/p)^2 tokens |
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from transformers import (
    CLIPVisionConfig,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    PretrainedConfig,
    VideoLlavaConfig,
    VideoLlavaForConditionalGeneration,
)

from .preprocess import anyres, normalize, resize_crop

POOL_STRIDE = 2
ANYRES_GRIDS = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))  # LLaVA-NeXT's grids, (height, width) in tiles


@dataclass(frozen=True)
class Family(ABC):
    name: str
    model_type: str  # the saved config's model_type
    model_class: type
    video_tower: str  # attribute of the inner model that encodes frames
    image_tower: str  # ... and images (the same attribute where one tower serves both)
    keep_cls: bool  # video features keep the tower's CLS token
    pools: bool  # 2x2 average pool of each frame's patch grid (the model's vision_resampler)

    @property
    def tag(self) -> str:
        """What a registered version is tagged with: the architecture and its LLM."""
        return f"{self.name}+qwen3"

    @property
    def not_quantized(self) -> list[str]:
        """Full module paths kept out of 4-bit (short names no longer match on transformers 5)."""
        towers = sorted({f"model.{self.video_tower}", f"model.{self.image_tower}"})
        return [*towers, "model.multi_modal_projector", "lm_head"]

    def towers(self, inner) -> list:
        return [getattr(inner, a) for a in dict.fromkeys((self.video_tower, self.image_tower))]

    def frame_tokens(self, cfg) -> int:
        v = cfg.vision_config
        patches = (v.image_size // v.patch_size) ** 2
        return patches // POOL_STRIDE**2 if self.pools else patches + self.keep_cls

    def video_tokens(self, cfg, num_frames: int) -> int:
        return num_frames * self.frame_tokens(cfg)

    def frame_features(self, inner, hidden: torch.Tensor) -> torch.Tensor:
        """Per frame, the tower's hidden state at the feature layer (CLS first) -> what the projector takes."""
        if not self.keep_cls:
            hidden = hidden[:, 1:]
        return inner.vision_resampler(hidden) if self.pools else hidden

    @abstractmethod
    def config(self, vision: CLIPVisionConfig, text, video_id: int, image_id: int, num_frames: int):
        """The transformers config around a CLIP tower and a Qwen3 LLM (fresh projector)."""

    @abstractmethod
    def image_tokens(self, cfg, height: int, width: int) -> int:
        """`<image>` positions the model consumes for one image of that size."""

    @abstractmethod
    def image_inputs(self, image: np.ndarray, size: int) -> dict[str, torch.Tensor]:
        """One uint8 (H, W, 3) image as the model's keyword inputs for its `<image>` path (batch of one)."""


class _LlavaNextVideo(Family):
    def config(self, vision, text, video_id, image_id, num_frames):
        size = vision.image_size
        per_frame = (size // vision.patch_size) ** 2
        return LlavaNextVideoConfig(
            vision_config=vision,
            text_config=text,
            video_token_index=video_id,
            image_token_index=image_id,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",  # "full" breaks the pooler's reshape
            spatial_pool_mode="average",
            spatial_pool_stride=POOL_STRIDE,
            image_grid_pinpoints=[[h * size, w * size] for h, w in ANYRES_GRIDS],
            image_seq_length=per_frame,
            video_seq_length=num_frames * per_frame // POOL_STRIDE**2,
            tie_word_embeddings=text.tie_word_embeddings,
        )

    def image_tokens(self, cfg, height, width):
        """The thumbnail's patches, plus the tile grid's with the padded area removed and a newline per row."""
        v = cfg.vision_config
        side = v.image_size // v.patch_size
        grid_h, grid_w = best_grid(height, width, v.image_size)
        rows, cols = grid_h * side, grid_w * side
        if width / height > cols / rows:  # wider than the grid: rows were padded
            rows -= 2 * ((rows - int(round(height * cols / width, 7))) // 2)
        else:
            cols -= 2 * ((cols - int(round(width * rows / height, 7))) // 2)
        return side * side + rows * (cols + 1)

    def image_inputs(self, image, size):
        h, w = image.shape[:2]
        return {
            "pixel_values": torch.from_numpy(anyres(image, size)).unsqueeze(0),
            "image_sizes": torch.tensor([[h, w]]),
        }


class _VideoLlava(Family):
    def config(self, vision, text, video_id, image_id, num_frames):
        patches = (vision.image_size // vision.patch_size) ** 2
        return VideoLlavaConfig(
            vision_config=vision,
            text_config=text,
            video_token_index=video_id,
            image_token_index=image_id,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",  # images drop CLS; videos keep it (transformers' code)
            image_seq_length=patches,
            video_seq_length=num_frames * (patches + 1),
            tie_word_embeddings=text.tie_word_embeddings,
        )

    def image_tokens(self, cfg, height, width):
        v = cfg.vision_config
        return (v.image_size // v.patch_size) ** 2

    def image_inputs(self, image, size):
        return {"pixel_values": torch.from_numpy(normalize(resize_crop(image, size))).unsqueeze(0)}


FAMILIES = {
    f.name: f
    for f in (
        _LlavaNextVideo(
            "llava-next-video",
            "llava_next_video",
            LlavaNextVideoForConditionalGeneration,
            "vision_tower",
            "vision_tower",
            keep_cls=False,
            pools=True,
        ),
        _VideoLlava(
            "video-llava",
            "video_llava",
            VideoLlavaForConditionalGeneration,
            "video_tower",
            "image_tower",
            keep_cls=True,
            pools=False,
        ),
    )
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}: one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(cfg: PretrainedConfig) -> Family:
    """The family of a model's config (a loaded model's `.config`, or AutoConfig of a saved folder)."""
    for f in FAMILIES.values():
        if cfg.model_type == f.model_type:
            return f
    raise ValueError(f"model_type {cfg.model_type!r} is no kocap family ({', '.join(FAMILIES)})")


def best_grid(height: int, width: int, size: int) -> tuple[int, int]:
    """LLaVA-NeXT's choice: the grid keeping the most of the image's resolution, then the least waste."""
    best, best_key = None, None
    for gh, gw in ANYRES_GRIDS:
        scale = min(gw * size / width, gh * size / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        key = (effective, -(gh * gw * size * size - effective))
        if best_key is None or key > best_key:
            best, best_key = (gh, gw), key
    return best
