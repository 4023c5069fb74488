"""Model configurations: LLaVA-NeXT-Video with a Qwen3 LLM, and the token counts they imply.

Production presets load real configs with `from_pretrained` (hub ids or local folders). The
architecture constants below (from the model cards, shared/notes/model.md) let tests and the GPU
benchmark build the production shapes without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPVisionConfig, LlavaNextVideoConfig, Qwen3Config

FAMILY = "llava-next-video+qwen3"  # the model family every preset here builds (versions carry it as a tag)

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
# AnyRes grids of LLaVA-NeXT (multiples of the tile size), as (height, width) in tiles.
ANYRES_GRIDS = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))
POOL_STRIDE = 2


def llava_config(
    vision: CLIPVisionConfig, text: Qwen3Config, video_token_id: int, image_token_id: int, num_frames: int
) -> LlavaNextVideoConfig:
    """The LLaVA-NeXT-Video config around a CLIP tower and a Qwen3 LLM (fresh projector)."""
    size = vision.image_size
    per_frame = (size // vision.patch_size) ** 2
    return LlavaNextVideoConfig(
        vision_config=vision,
        text_config=text,
        video_token_index=video_token_id,
        image_token_index=image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",  # "full" breaks the pooler's reshape
        spatial_pool_mode="average",
        spatial_pool_stride=POOL_STRIDE,
        image_grid_pinpoints=[[h * size, w * size] for h, w in ANYRES_GRIDS],
        image_seq_length=per_frame,
        video_seq_length=num_frames * per_frame // POOL_STRIDE**2,
        tie_word_embeddings=text.tie_word_embeddings,
    )


def production_config(
    llm: str, video_token_id: int, image_token_id: int, num_frames: int = 8, vocab_size: int | None = None
) -> LlavaNextVideoConfig:
    """The production architecture from constants (no download): for tests and the GPU benchmark."""
    text = Qwen3Config(**{**QWEN3[llm], **({"vocab_size": vocab_size} if vocab_size else {})})
    return llava_config(CLIPVisionConfig(**CLIP_L_336), text, video_token_id, image_token_id, num_frames)


def frame_tokens(cfg: LlavaNextVideoConfig) -> int:
    """Tokens per frame after the 2x2 pool: (image_size // patch) ** 2 // stride ** 2."""
    v = cfg.vision_config
    return (v.image_size // v.patch_size) ** 2 // cfg.spatial_pool_stride**2


def video_tokens(cfg: LlavaNextVideoConfig, num_frames: int) -> int:
    return num_frames * frame_tokens(cfg)


def image_tokens(cfg: LlavaNextVideoConfig, height: int, width: int) -> int:
    """`<image>` positions the model consumes for one image through AnyRes: the thumbnail's patches,
    plus the tile grid's patches with the padded area removed and one newline token per row."""
    v = cfg.vision_config
    side = v.image_size // v.patch_size
    grid_h, grid_w = best_grid(height, width, v.image_size)
    rows, cols = grid_h * side, grid_w * side
    if width / height > cols / rows:  # wider than the grid: rows were padded
        rows -= 2 * ((rows - int(round(height * cols / width, 7))) // 2)
    else:
        cols -= 2 * ((cols - int(round(width * rows / height, 7))) // 2)
    return side * side + rows * (cols + 1)


def anyres_tokens_before_unpadding(cfg: LlavaNextVideoConfig, height: int, width: int) -> int:
    """The design's count: (tiles + thumbnail) x patches per tile (2,880 for 1024x768 at 336 px)."""
    v = cfg.vision_config
    grid_h, grid_w = best_grid(height, width, v.image_size)
    return (grid_h * grid_w + 1) * (v.image_size // v.patch_size) ** 2


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


def source(root: Path, name: str) -> str:
    """A preset's model: a folder (relative to the project, or absolute) when it exists, else a hub id."""
    local = root / name
    return str(local) if local.is_dir() else name
