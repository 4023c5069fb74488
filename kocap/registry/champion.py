"""The champion's captions for the current validation set, so the gate compares on the same clips.

Made once per (champion run, validation set, generation budget) and cached in `.kocap-cache/champion/`: the set
changes when new data lands, and then the champion is re-captioned rather than trusted on its old
number. With the same frames and preset as now, the cached tower features are reused; otherwise the
champion decodes the validation videos with its own frame settings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .. import paths
from ..config import Config
from ..io import write_json

log = logging.getLogger(__name__)
CACHE = ".kocap-cache/champion"


def champion_captions(cfg: Config, root: Path, champion, val, val_set: str, max_new_tokens: int) -> list[str]:
    """The champion's captions of `val`, made with the generation budget the challenger was given (a
    budget frozen at the champion's registration would cut it when new data has longer captions).
    Cached by the version's identity (its run), not its number: after `make clean` a new v1 is another model."""
    path = root / cache_path(champion, val_set, max_new_tokens)
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    import mlflow

    log.info("captioning validation set %s with champion v%s (once; cached)", val_set, champion.version)
    captioner = mlflow.pyfunc.load_model(f"models:/{champion.name}/{champion.version}").unwrap_python_model().captioner
    captioner.max_new_tokens = max_new_tokens
    captions = _caption(captioner, cfg, root, val)
    write_json(path, captions)
    return captions


def cache_path(champion, val_set: str, max_new_tokens: int) -> str:
    identity = champion.run_id or f"v{champion.version}"
    return f"{CACHE}/{champion.name}-{identity}-{val_set}-{max_new_tokens}.json"


def _caption(captioner, cfg: Config, root: Path, val) -> list[str]:
    """The champion's captions, one generation batch of features (or decoded videos) in memory at a time."""
    import pandas as pd

    from ..model.features import FeatureStore

    theirs, size = captioner.cfg, captioner.cfg.eval.batch_size
    if theirs.section("frames") == cfg.section("frames") and theirs.model.chosen == cfg.model.chosen:
        features = FeatureStore(captioner.model, root).get

        def caption(rows, seed: int) -> list[str]:
            return captioner.caption_features(features(rows), batch_size=size, seed=seed)

    else:  # another frame sampling or preset: the champion's own frames from the videos
        videos = pd.read_parquet(root / paths.VALID_CLIPS).set_index("sample_id")["video_path"]

        def caption(rows, seed: int) -> list[str]:
            frames = np.stack([captioner.frames(root / videos[s]) for s in rows["sample_id"]])
            return captioner.caption_frames(frames, batch_size=size, seed=seed)

    out = []
    for start in range(0, len(val), size):
        out += caption(val.iloc[start : start + size], theirs.eval.seed + start)
    return out
