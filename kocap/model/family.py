"""Model families: what differs between the video-language architectures kocap trains, in one place.

    fam = family(preset.family)         # by name, from params.yaml
    fam = family_of(model.config)       # from a saved or loaded model (its config's model_type)

Training, evaluation, serving and the registry ask the family (tower, features per frame, image path,
config, media tokens, what stays unquantized, what trains) and never branch on its name. All three use a
Qwen3 LLM with Qwen's ChatML (`text.py`) and one frames path (`data/video.py`); what differs:

- llava-next-video (LlavaNextVideoForConditionalGeneration): one CLIP tower for images and videos, CLS
  dropped and 2x2 pooled: (S/p)^2 / 4 tokens per frame (144 at 336 px); a fresh projector trains in
  stage 1 (AnyRes images: tiles + thumbnail, unpadded, a newline per row) and with LoRA in stage 2.
- video-llava (VideoLlavaForConditionalGeneration): a video and an image tower, one projector, the CLS
  kept for videos: (S/p)^2 + 1 tokens per frame (257 at 224 px); stage-1 images are one S x S crop.
- qwen3-vl (Qwen3VLForConditionalGeneration): the pretrained checkpoint whole (`aligned`: stage 1 is
  skipped), its ViT embedding frame pairs and merging 2x2 patches: (S/p)^2 / 4 tokens per frame pair
  (196 at 448 px); stage 2 trains LoRA on the LLM alone; the cache holds the merger's output and its
  DeepStack features, LLM width x (1 + DeepStack layers) per token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from transformers import (
    CLIPVisionModel,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    PretrainedConfig,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    VideoLlavaConfig,
    VideoLlavaForConditionalGeneration,
)
from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures, Qwen3VLVisionModel

from .preprocess import CLIP_MEAN, CLIP_STD, anyres, normalize, resize_crop
from .text import IMAGE, VIDEO

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
    aligned: bool = False  # a pretrained video-language checkpoint: stage 1 (align) is skipped
    trained_modules: tuple[str, ...] = ("multi_modal_projector",)  # beside LoRA: trains in stage 1 and 2
    tiny_tower_class: type = CLIPVisionModel  # the random stand-in the tiny preset pre-trains

    @property
    def tag(self) -> str:
        """What a registered version is tagged with: the architecture and its LLM."""
        return f"{self.name}+qwen3"

    @property
    def not_quantized(self) -> list[str]:
        """Full module paths kept out of 4-bit (short names no longer match on transformers 5)."""
        towers = sorted({f"model.{self.video_tower}", f"model.{self.image_tower}"})
        return [*towers, *(f"model.{m}" for m in self.trained_modules), "lm_head"]

    @property
    def special_tokens(self) -> list[str]:
        """Tokens the tokenizer must hold (added where missing)."""
        return [VIDEO, IMAGE]

    def token_ids(self, tokenizer) -> dict[str, int]:
        """The config's token ids, from the tokenizer."""
        return {"video_id": tokenizer.convert_tokens_to_ids(VIDEO), "image_id": tokenizer.convert_tokens_to_ids(IMAGE)}

    def towers(self, inner) -> list:
        return [getattr(inner, a) for a in dict.fromkeys((self.video_tower, self.image_tower))]

    def frame_tokens(self, cfg) -> int:
        v = cfg.vision_config
        patches = (v.image_size // v.patch_size) ** 2
        return patches // POOL_STRIDE**2 if self.pools else patches + self.keep_cls

    def video_tokens(self, cfg, num_frames: int) -> int:
        return num_frames * self.frame_tokens(cfg)

    def feature_width(self, cfg) -> int:
        """Width of the cached per-token features (what `video_features` returns)."""
        return cfg.vision_config.hidden_size

    def frame_features(self, inner, hidden: torch.Tensor) -> torch.Tensor:
        """Per frame, the tower's hidden state at the feature layer (CLS first) -> what the projector takes."""
        if not self.keep_cls:
            hidden = hidden[:, 1:]
        return inner.vision_resampler(hidden) if self.pools else hidden

    def still_features(self, inner, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, S, S, 3) single frames -> (N, tokens, feature_width), with gradients: the tiny tower's
        pre-training reads the path the LM's features take."""
        tower = getattr(inner, self.video_tower)
        pixels = torch.from_numpy(normalize(frames)).to(tower.device, tower.dtype)
        return self.frame_features(inner, layer_hidden(tower, inner.config.vision_feature_layer, pixels))

    def video_features(self, inner, frames: np.ndarray, max_frames: int) -> torch.Tensor:
        """uint8 (B, k, S, S, 3) -> (B, video_tokens, feature_width): what the feature cache stores. The tower
        is frozen, so these never change while the projector and LoRA train."""
        b = frames.shape[0]
        flat = frames.reshape(-1, *frames.shape[2:])
        parts = [self.still_features(inner, flat[i : i + max_frames]) for i in range(0, len(flat), max_frames)]
        pooled = torch.cat(parts)
        return pooled.reshape(b, -1, pooled.shape[-1])

    def video_media(self, cfg, n_tokens: int) -> dict:
        """How the video stands in the user turn (`text.encode`'s `media` and `media_text`): one `<video>`."""
        return {}

    def lm_inputs(self, base, ids: torch.Tensor, mask: torch.Tensor, features: torch.Tensor) -> dict:
        """The inner model's (and generate's) keyword inputs for a batch of ids with its video features:
        the embeddings with the projected features at the `<video>` positions."""
        return {"inputs_embeds": project_into(base, ids, features), "attention_mask": mask}

    pixel_mean_std = (tuple(CLIP_MEAN.tolist()), tuple(CLIP_STD.tolist()))  # how frames are normalized

    def plain_code(self, cfg, num_frames: int) -> str:
        """Plain-transformers lines for an exported model's README: from `pixels` (k, 3, S, S normalized, by
        the saved image processor) and the templated `prompt`, the expanded `prompt` and the `media` inputs
        of `generate` (`ids`, the prompt's ids, exist when `media` is used)."""
        n = self.video_tokens(cfg, num_frames)
        return (
            f'prompt = prompt.replace("<video>", "<video>" * {n})  # {n} video tokens per clip\n'
            'media = lambda ids: {"pixel_values_videos": pixels[None]}'
        )

    def tiny_vision_config(self, image_size: int, patch_size: int, text) -> PretrainedConfig:
        """The tiny preset's random tower, before its pre-training (`text`: the tiny LLM's config)."""
        from . import build  # looked up at call time: benchmarks/learning_experiments.py swaps it

        return build.tiny_vision_config(image_size, patch_size)

    @abstractmethod
    def config(self, vision, text, video_id: int, image_id: int, num_frames: int, **ids):
        """The transformers config around a vision config and a Qwen3 LLM's config (fresh projector)."""

    @abstractmethod
    def image_tokens(self, cfg, height: int, width: int) -> int:
        """`<image>` positions the model consumes for one image of that size."""

    @abstractmethod
    def image_inputs(self, image: np.ndarray, size: int) -> dict[str, torch.Tensor]:
        """One uint8 (H, W, 3) image as the model's keyword inputs for its `<image>` path (batch of one)."""


def layer_hidden(tower, layer: int, pixels: torch.Tensor) -> torch.Tensor:
    """A CLIP tower's hidden state at `layer` (CLS first) without running the layers after it. Equal to
    `tower(pixels, output_hidden_states=True).hidden_states[layer]` (tested)."""
    vision = getattr(tower, "vision_model", tower)  # transformers 4 nests it
    layers = vision.encoder.layers
    depth = layer if layer >= 0 else len(layers) + 1 + layer
    hidden = vision.pre_layrnorm(vision.embeddings(pixels))
    for block in layers[:depth]:
        hidden = block(hidden, None)
    return hidden


def project_into(base, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Token embeddings with the projected video features at the `<video>` positions."""
    embeds = base.get_input_embeddings()(input_ids)
    projector = base.model.multi_modal_projector
    projected = projector(features.to(next(projector.parameters()).dtype)).to(embeds.dtype)
    mask = input_ids == base.config.video_token_index
    if int(mask.sum()) != projected.shape[0] * projected.shape[1]:
        raise ValueError(
            f"{int(mask.sum())} <video> tokens but {projected.shape[0] * projected.shape[1]} video features"
        )
    return embeds.masked_scatter(mask.unsqueeze(-1), projected.reshape(-1, projected.shape[-1]))


class _LlavaNextVideo(Family):
    def config(self, vision, text, video_id, image_id, num_frames, **ids):
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
    def config(self, vision, text, video_id, image_id, num_frames, **ids):
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


VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"
TEMPORAL_PATCH = 2  # Qwen3-VL's tower embeds frames in pairs
MERGE = 2  # and its merger joins 2x2 patches into one LLM token
MROPE_SHARES = (24, 20, 20)  # Qwen3-VL's split of a 128-dim head's 64 rotary pairs into time, height, width


class _Qwen3VL(Family):
    """A pretrained video-language model (no separate projector: the tower's merger maps into the LLM, and
    its DeepStack mergers add tower features to the LLM's first layers). What the cache stores per token is
    the merger's output with the DeepStack features beside it, so the frozen tower never runs twice."""

    @property
    def tag(self):
        return self.name  # its LLM is a Qwen3 already

    @property
    def special_tokens(self):
        return [VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD]

    def token_ids(self, tokenizer):
        start, end, video, image = tokenizer.convert_tokens_to_ids(self.special_tokens)
        return {"video_id": video, "image_id": image, "start_id": start, "end_id": end}

    def config(self, vision, text, video_id, image_id, num_frames, start_id=None, end_id=None):
        tie = text.tie_word_embeddings
        if text.model_type != "qwen3_vl_text":  # a Qwen3 LLM's config (the tiny preset): M-RoPE over its head
            half = text.head_dim // 2
            shares = [round(half * s / sum(MROPE_SHARES)) for s in MROPE_SHARES]
            shares[0] += half - sum(shares)
            keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
            keep += ("num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "hidden_act")
            rope = {**text.rope_parameters, "mrope_section": shares, "mrope_interleaved": True}
            text = {**{k: getattr(text, k) for k in keep}, "rope_parameters": rope}
        return Qwen3VLConfig(
            vision_config=vision,
            text_config=text,
            video_token_id=video_id,
            image_token_id=image_id,
            vision_start_token_id=start_id,
            vision_end_token_id=end_id,
            tie_word_embeddings=tie,
        )

    def tiny_vision_config(self, image_size, patch_size, text):
        from transformers import Qwen3VLVisionConfig

        return Qwen3VLVisionConfig(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            out_hidden_size=text.hidden_size,
            patch_size=patch_size,
            temporal_patch_size=TEMPORAL_PATCH,
            spatial_merge_size=MERGE,
            num_position_embeddings=(image_size // patch_size) ** 2,
            deepstack_visual_indexes=[0],
            image_size=image_size,
        )

    def _grid(self, cfg) -> int:
        v = cfg.vision_config
        return v.image_size // v.patch_size

    def group_tokens(self, cfg) -> int:
        """LLM tokens per pair of frames: the patch grid after the 2x2 merge."""
        return self._grid(cfg) ** 2 // MERGE**2

    def frame_tokens(self, cfg):
        return self.group_tokens(cfg) // TEMPORAL_PATCH  # a pair of frames shares its tokens

    def video_tokens(self, cfg, num_frames):
        return -(-num_frames // TEMPORAL_PATCH) * self.group_tokens(cfg)

    def feature_width(self, cfg):
        return cfg.text_config.hidden_size * (1 + len(cfg.vision_config.deepstack_visual_indexes))

    def _encode(self, inner, clips: np.ndarray) -> torch.Tensor:
        """uint8 (B, k, S, S, 3) -> (B, tokens, feature_width): merger output, then each DeepStack feature."""
        pixels, thw = qwen_patches(clips, inner.config.vision_config.patch_size)
        out = inner.get_video_features(pixels.to(inner.visual.device), thw.to(inner.visual.device))
        return torch.cat([torch.stack(out.pooler_output), *(torch.stack(d) for d in out.deepstack_features)], dim=-1)

    def still_features(self, inner, frames):
        return self._encode(inner, np.repeat(frames[:, None], TEMPORAL_PATCH, axis=1))  # as Qwen embeds an image

    def video_features(self, inner, frames, max_frames):
        step = max(1, max_frames // frames.shape[1])
        return torch.cat([self._encode(inner, frames[i : i + step]) for i in range(0, len(frames), step)])

    def video_media(self, cfg, n_tokens):
        """Qwen3-VL's video text: per pair of frames a timestamp, then its tokens between vision markers.
        kocap's frames carry no clock, so the stamps are nominal (a frame a second: 0.5 s, 2.5 s, ...)."""
        groups = n_tokens // self.group_tokens(cfg)
        text = "".join(
            f"<{TEMPORAL_PATCH * g + 0.5:.1f} seconds>{VISION_START}{VIDEO_PAD}{VISION_END}" for g in range(groups)
        )
        return {"media": VIDEO_PAD, "media_text": text}

    def lm_inputs(self, base, ids, mask, features):
        cfg = base.config
        width = cfg.text_config.hidden_size
        parts = [p.to(base.model.visual.dtype) for p in features.split(width, dim=-1)]
        side = self._grid(cfg)
        groups = features.shape[1] // self.group_tokens(cfg)
        encoded = BaseModelOutputWithDeepstackFeatures(
            pooler_output=tuple(parts[0]), deepstack_features=[tuple(p) for p in parts[1:]]
        )
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "video_grid_thw": torch.tensor([[groups, side, side]] * len(ids), device=ids.device),
            "mm_token_type_ids": (ids == cfg.video_token_id).int() * 2,  # 2: video, for M-RoPE's positions
            "mm_encoder_outputs": {"video": encoded},
        }

    pixel_mean_std = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    def plain_code(self, cfg, num_frames):
        """Qwen3VLVideoProcessor's patch layout (that processor needs torchvision, which kocap never installs)
        and `video_media`'s text, as plain lines."""
        v = cfg.vision_config
        pairs, side, per_pair = -(-num_frames // TEMPORAL_PATCH), self._grid(cfg), self.group_tokens(cfg)
        return (
            f"# Qwen3-VL's video patches: frame pairs, {v.patch_size} px patches in 2x2 merge order "
            f"({per_pair} tokens per pair)\n"
            f"t, g, p = {pairs}, {side}, {v.patch_size}\n"
            "patches = pixels.reshape(t, 2, 3, g // 2, 2, p, g // 2, 2, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)\n"
            f'stamped = "<{{:.1f}} seconds>{VISION_START}" + "{VIDEO_PAD}" * {per_pair} + "{VISION_END}"  # 1 s/frame\n'
            'prompt = prompt.replace("<video>", "".join(stamped.format(2 * i + 0.5) for i in range(t)))\n'
            "media = lambda ids: {\n"
            '    "pixel_values_videos": patches.reshape(t * g * g, -1),\n'
            '    "video_grid_thw": torch.tensor([[t, g, g]]),\n'
            f'    "mm_token_type_ids": (ids == {cfg.video_token_id}).int() * 2,  # M-RoPE: which tokens are video\n'
            "}"
        )

    def image_tokens(self, cfg, height, width):
        raise ValueError(f"{self.name} has no stage-1 image path: it is aligned already (stage 1 is skipped)")

    def image_inputs(self, image, size):
        raise ValueError(f"{self.name} has no stage-1 image path: it is aligned already (stage 1 is skipped)")


def qwen_patches(clips: np.ndarray, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, k, S, S, 3), k even -> Qwen3-VL's flat patches (B * k/2 * (S/p)^2, 3 * 2 * p * p), mean and
    std 0.5, in its merge order, and the (B, 3) grid (k/2, S/p, S/p): Qwen3VLVideoProcessor's layout without
    its torchvision resize (kocap's frames are already S x S)."""
    b, k, s = clips.shape[:3]
    # astype copies: frames often come memory-mapped, read-only
    x = torch.from_numpy(clips.astype(np.float32)).div(255).sub(0.5).div(0.5).permute(0, 1, 4, 2, 3)
    t, g = k // TEMPORAL_PATCH, s // patch
    x = x.reshape(b, t, TEMPORAL_PATCH, 3, g // MERGE, MERGE, patch, g // MERGE, MERGE, patch)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9).reshape(b * t * g * g, 3 * TEMPORAL_PATCH * patch * patch)
    return x, torch.tensor([[t, g, g]] * b)


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
        _Qwen3VL(
            "qwen3-vl",
            "qwen3_vl",
            Qwen3VLForConditionalGeneration,
            "visual",
            "visual",
            keep_cls=False,
            pools=False,
            aligned=True,
            trained_modules=(),
            tiny_tower_class=Qwen3VLVisionModel,
        ),
    )
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}: one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def pretrained(preset) -> bool:
    """Whether a preset (config.Preset) starts from a trained video-language model: an aligned family (always)
    or a checkpoint of any family taken whole (`pretrained: true`, the original 7B checkpoints). Its
    stage 1 is skipped, and its base is that checkpoint's weights (the tiny presets' are built)."""
    return preset.pretrained or family(preset.family).aligned


def stage1_skip_reason(preset, name: str) -> str | None:
    """Why stage 1 is skipped for a pretrained preset (None: it runs, unless switched off)."""
    if family(preset.family).aligned:
        return f"the {preset.family} family is pretrained as a video-language model: nothing to align"
    if preset.pretrained:
        return f"the {name} preset is a trained video-language checkpoint ({preset.llm}): nothing to align"
    return None


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
