"""Image preprocessing identical to CLIPImageProcessor, without torchvision.

    pixels = resize_crop(frames_uint8, size)          # the frames stage stores this (uint8)
    tensor = normalize(pixels)                        # float32 (k, 3, size, size), CLIP mean/std

Resize: shortest edge to `size`, PIL bicubic; centre crop to size x size; scale 1/255; normalise.
"""

from __future__ import annotations

import numpy as np

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def resize_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """(k, H, W, 3) or (H, W, 3) uint8 -> same rank, size x size, uint8."""
    if frames.ndim == 3:
        return _one(frames, size)
    return np.stack([_one(f, size) for f in frames])


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    if (h, w) == img.shape[:2]:
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), resample=Image.BICUBIC, reducing_gap=None))


def _one(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)  # as transformers' get_resize_output_image_size
    new_h, new_w = (size, new_long) if h <= w else (new_long, size)
    img = _resize(img, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) with the OpenAI CLIP mean and std."""
    x = (pixels.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    return np.moveaxis(x, -1, -3)


def anyres(image: np.ndarray, size: int) -> np.ndarray:
    """LLaVA-NeXT's AnyRes input for one uint8 (H, W, 3) image, identical to LlavaNextImageProcessor:
    float32 (1 + tiles, 3, size, size) = the whole image squeezed to size x size, then the tiles of the
    best grid (image resized to fit it, centred on black padding), row by row. Pass (H, W) as image_sizes."""
    import math

    from .family import best_grid

    h, w = image.shape[:2]
    grid_h, grid_w = best_grid(h, w, size)
    target_h, target_w = grid_h * size, grid_w * size
    if target_w / w < target_h / h:
        new_h, new_w = min(math.ceil(h * target_w / w), target_h), target_w
    else:
        new_h, new_w = target_h, min(math.ceil(w * target_h / h), target_w)
    canvas = np.zeros((target_h, target_w, 3), np.uint8)
    top, left = (target_h - new_h) // 2, (target_w - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = _resize(image, new_h, new_w)
    tiles = [canvas[r : r + size, c : c + size] for r in range(0, target_h, size) for c in range(0, target_w, size)]
    return normalize(np.stack([_resize(image, size, size), *tiles]))
