"""The dataset rows training, evaluation and the gate share: a split's frames-index rows with their captions,
and the stored frames of one row.

    rows = split_rows(root, "val")          # sample_id, split, shard, offset, ..., caption_ko
    frames = open_frames(root, rows.iloc[0])
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths


def split_rows(root: Path, split: str = "train") -> pd.DataFrame:
    """Frames index rows of a split joined with their captions."""
    index = pd.read_parquet(root / paths.FRAMES / "clips.parquet")
    captions = pd.read_parquet(root / paths.VALID_CLIPS)[["sample_id", "caption_ko"]]
    return index[index["split"] == split].merge(captions, on="sample_id").reset_index(drop=True)


def open_frames(root: Path, index_row) -> np.ndarray:
    """The stored frames of one indexed sample (memory-mapped; no copy until used)."""
    return np.load(root / paths.FRAMES / index_row["shard"], mmap_mode="r")[index_row["offset"]]
