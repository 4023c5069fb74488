"""Atomic writes: a crash never leaves a half-written table or report where a stage reads it."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pandas as pd


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def temp_beside(path: Path) -> Path:
    """A temporary name next to `path`, unique per process and thread (parallel shards may race)."""
    return path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def file_md5(path: Path) -> str:
    """md5 of a file read in 1 MiB blocks (the hash DVC and AI-Hub's checks use)."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
