"""Model configurations: each family (family.py) with a Qwen3 LLM, and the token counts they imply.

Production presets load real configs with `from_pretrained` (hub ids or local folders). The
architecture constants below (from the model cards, shared/notes/model.md) let tests and the GPU
benchmark build the production shapes without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPVisionConfig, LlavaNextVideoConfig, Qwen3Config

from .family import ANYRES_GRIDS, POOL_STRIDE, best_grid, family, family_of  # noqa: F401 (re-exported)

FAMILY = family("llava-next-video").tag  # the default family (versions made before families were tagged)

CLIP_L_336 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
)
CLIP_L_224 = {**CLIP_L_336, "image_size": 224}  # Video-LLaVA's towers (LanguageBind, CLIP-L/14 shaped)
TOWERS = {"llava-next-video": CLIP_L_336, "video-llava": CLIP_L_224}
QWEN3 = {
    "Qwen/Qwen3-8B": dict(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=False,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
    ),
    "Qwen/Qwen3-4B": dict(
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=True,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
    ),
}
_QWEN3_VL_TEXT = dict(rope_theta=5000000.0, max_position_embeddings=262144)  # M-RoPE shares come from family.py
_QWEN3_VL_TOWER = dict(
    num_heads=16,
    patch_size=16,
    temporal_patch_size=2,
    spatial_merge_size=2,
    num_position_embeddings=2304,  # a 48 x 48 grid, interpolated to kocap's frames
    hidden_act="gelu_pytorch_tanh",
    image_size=448,  # kocap's: the qwen3-vl presets' frames (14 x 14 merged patches per frame pair)
)
QWEN3_VL = {  # (LLM, tower) of each checkpoint: one download holds both
    "Qwen/Qwen3-VL-8B-Instruct": (
        {**QWEN3["Qwen/Qwen3-8B"], **_QWEN3_VL_TEXT},
        dict(
            depth=27,
            hidden_size=1152,
            intermediate_size=4304,
            out_hidden_size=4096,
            deepstack_visual_indexes=[8, 16, 24],
            **_QWEN3_VL_TOWER,
        ),
    ),
    "Qwen/Qwen3-VL-4B-Instruct": (
        {**QWEN3["Qwen/Qwen3-4B"], **_QWEN3_VL_TEXT},
        dict(
            depth=24,
            hidden_size=1024,
            intermediate_size=4096,
            out_hidden_size=2560,
            deepstack_visual_indexes=[5, 11, 17],
            **_QWEN3_VL_TOWER,
        ),
    ),
}
QWEN3_VL_IDS = dict(start_id=151652, end_id=151653)  # <|vision_start|>, <|vision_end|> in Qwen's tokenizer


def production_config(
    llm: str,
    video_token_id: int,
    image_token_id: int,
    num_frames: int = 8,
    vocab_size: int | None = None,
    family_name: str = "llava-next-video",
):
    """A production architecture from constants (no download): for tests and the GPU benchmark. `llm` is a
    Qwen3 LLM (with the family's CLIP-shaped tower) or a Qwen3-VL checkpoint (its own tower)."""
    from transformers import Qwen3VLVisionConfig

    if llm in QWEN3_VL:
        text, tower = QWEN3_VL[llm]
        vision, ids = Qwen3VLVisionConfig(**tower), QWEN3_VL_IDS
    else:
        text, vision, ids = QWEN3[llm], CLIPVisionConfig(**TOWERS[family_name]), {}
    text = Qwen3Config(**{**text, **({"vocab_size": vocab_size} if vocab_size else {})})
    return family(family_name).config(vision, text, video_token_id, image_token_id, num_frames, **ids)


def frame_tokens(cfg) -> int:
    """Video tokens per frame: 144 for LLaVA-NeXT-Video at 336 px (2x2 pooled), 257 for Video-LLaVA."""
    return family_of(cfg).frame_tokens(cfg)


def video_tokens(cfg, num_frames: int) -> int:
    return family_of(cfg).video_tokens(cfg, num_frames)


def image_tokens(cfg, height: int, width: int) -> int:
    """`<image>` positions the model consumes for one image (AnyRes for LLaVA-NeXT-Video)."""
    return family_of(cfg).image_tokens(cfg, height, width)


def anyres_tokens_before_unpadding(cfg: LlavaNextVideoConfig, height: int, width: int) -> int:
    """The design's count: (tiles + thumbnail) x patches per tile (2,880 for 1024x768 at 336 px)."""
    v = cfg.vision_config
    grid_h, grid_w = best_grid(height, width, v.image_size)
    return (grid_h * grid_w + 1) * (v.image_size // v.patch_size) ** 2


def source(root: Path, name: str) -> str:
    """A preset's model: a folder (relative to the project, or absolute) when it exists, else a hub id."""
    local = root / name
    return str(local) if local.is_dir() else name
