"""The frozen-tower feature cache: pooled CLIP features per clip, computed once, reused by stage 1,
stage 2 and evaluation.

Keyed by the tower (a hash of its weights) and the frames shard (whose key hashes its inputs and
params), stored as fp16 `.npy` beside nothing else: `<cache>/<tower>/<shard>.npy`, memory-mapped.
A cache is derived data: deleting it only costs time.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import paths
from ..io import temp_beside
from .family import family_of
from .video_lm import base_model, pooled_features

CACHE = ".kocap-cache/features"


_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tower_key(model) -> str:
    """A hash of the tower's config and weights, computed once per loaded tower (CLIP-L is 1.2 GB to
    hash; evaluation builds a store per shard). The tower is frozen everywhere, so it cannot go stale."""
    inner = base_model(model).model
    fam = family_of(inner.config)
    tower = getattr(inner, fam.video_tower)
    if tower not in _KEYS:  # the family too: one tower gives pooled features to one, CLS-kept to another
        _KEYS[tower] = _hash_tower(tower, fam.name)
    return _KEYS[tower]


def _hash_tower(tower, family_name: str) -> str:
    h = hashlib.sha256(family_name.encode() + tower.config.to_json_string().encode())
    for name, t in sorted(tower.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureStore:
    """Pooled features for the rows of a frames index (`shard`, `offset`), computed on first use."""

    def __init__(self, model, root: Path, cache: Path | None = None, batch_size: int = 16):
        self.model, self.root, self.batch_size = model, Path(root), batch_size
        self.folder = (cache or self.root / CACHE) / tower_key(model)
        self._open: dict[str, np.ndarray] = {}

    def get(self, rows: pd.DataFrame) -> torch.Tensor:
        """(len(rows), tokens, width) float32 for index rows, in order."""
        return torch.from_numpy(np.stack([self._shard(r["shard"])[r["offset"]] for _, r in rows.iterrows()])).float()

    def warm(self, index: pd.DataFrame) -> int:
        """Compute every missing shard now; returns how many were computed."""
        missing = [s for s in index["shard"].unique() if not self._path(s).exists()]
        for shard in missing:
            self._shard(shard)
        return len(missing)

    def _path(self, shard: str) -> Path:
        return self.folder / Path(shard).name

    def _shard(self, shard: str) -> np.ndarray:
        if shard not in self._open:
            path = self._path(shard)
            if not path.exists():
                self._compute(shard, path)
            self._open[shard] = np.load(path, mmap_mode="r")
        return self._open[shard]

    def _compute(self, shard: str, path: Path) -> None:
        frames = np.load(self.root / paths.FRAMES / shard, mmap_mode="r")
        parts = [
            pooled_features(self.model, np.asarray(frames[i : i + self.batch_size])).float().cpu().numpy()
            for i in range(0, len(frames), self.batch_size)
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_beside(path)
        with tmp.open("wb") as f:  # a file object: np.save would append .npy to a name
            np.save(f, np.concatenate(parts).astype(np.float16))
        os.replace(tmp, path)
