"""Training samples from dataset rows: the preamble both training stages (and benchmarks/train.py) share.

encoded, rows, dropped = warm_and_encode(split_rows(root), FeatureStore(model, root), tokenizer, cfg)
"""

from __future__ import annotations

import logging

import pandas as pd

from ..config import Config
from ..model.text import SampleTooLong, encode
from ..model.video_lm import video_media

log = logging.getLogger(__name__)


def warm_and_encode(rows: pd.DataFrame, store, tokenizer, cfg: Config) -> tuple[list, pd.DataFrame, int]:
    """Cache every row's pooled video features, then encode the rows for as many video tokens as they take."""
    store.warm(rows)
    n = store.get(rows.iloc[:1]).shape[1]
    return encode_rows(rows, tokenizer, cfg, n, **video_media(store.model, n))


def encode_rows(
    rows: pd.DataFrame, tokenizer, cfg: Config, media_tokens: int, **media
) -> tuple[list, pd.DataFrame, int]:
    """Encode every sample; a too-long one is an error naming it, or a counted drop (model.too_long).
    `media`: how the family places the video in the prompt (`video_lm.video_media`)."""
    encoded, keep, dropped = [], [], 0
    for i, row in rows.iterrows():
        try:
            encoded.append(
                encode(
                    tokenizer,
                    cfg.model.prompt,
                    row["caption_ko"],
                    media_tokens,
                    cfg.model.max_length,
                    row["sample_id"],
                    **media,
                )
            )
            keep.append(i)
        except SampleTooLong:
            if cfg.model.too_long == "error":
                raise
            dropped += 1
    if dropped:
        log.warning(
            "%d sample(s) longer than model.max_length=%d dropped (never truncated)", dropped, cfg.model.max_length
        )
    return encoded, rows.loc[keep].reset_index(drop=True), dropped
