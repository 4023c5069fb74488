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


def _one(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)  # as transformers' get_resize_output_image_size
    new_h, new_w = (size, new_long) if h <= w else (new_long, size)
    if (new_h, new_w) != (h, w):
        img = np.asarray(Image.fromarray(img).resize((new_w, new_h), resample=Image.BICUBIC, reducing_gap=None))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) with the OpenAI CLIP mean and std."""
    x = (pixels.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    return np.moveaxis(x, -1, -3)
