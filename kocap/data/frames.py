"""The frames stage: k uniform frames per validated clip (and each stage-1 image), resized and
centre-cropped to the preset's vision size, stored as uint8 shards with an index.

    kocap stage frames

Layout: `data/frames/{clips,images}/<key>.npy` (memory-mappable; clips (N, k, S, S, 3), images
(N, S, S, 3)), a `<key>.json` sidecar per shard (its sample ids and rejects; written last, so its
presence means the shard is finished), and `data/frames/{clips,images}.parquet` indexes. The shard
key hashes its inputs and the params, so a re-run after a crash skips finished shards and a
param change rebuilds them. Shards run in parallel (`frames.workers`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..config import Config
from ..io import write_json, write_parquet
from .decoder import decoder
from .video import FrameSpec, VideoError

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the stored layout changes: every shard key changes with it


def run(cfg: Config, root: Path, env=None) -> dict:
    from ..model.runtime import cores  # here, not at the top: the decode workers need no torch

    spec = FrameSpec.from_config(cfg)
    workers = cfg.frames.workers or cores()  # a container's CPU set, not the host's count
    clips = pd.read_parquet(root / paths.VALID_CLIPS)
    images = pd.read_parquet(root / paths.VALID_IMAGES)
    limits = {"shard_size": cfg.frames.shard_size, "workers": workers, "timeout_s": cfg.frames.decode_timeout_s}
    clip_index, clip_rejects = extract(clips, "video_path", "clips", root, spec, **limits)
    image_index, image_rejects = extract(images, "image_path", "images", root, spec, **limits)
    clip_index = clip_index.merge(clips[["sample_id", "split"]], on="sample_id")
    write_parquet(clip_index, root / paths.FRAMES / "clips.parquet")
    write_parquet(image_index, root / paths.FRAMES / "images.parquet")
    rejects = pd.DataFrame(clip_rejects + image_rejects, columns=["kind", "sample_id", "reason"])
    write_parquet(rejects, root / paths.FRAMES_REJECTS)
    report = {"clips": len(clip_index), "images": len(image_index), "rejected": len(rejects),
              "num_frames": spec.num_frames, "size": spec.size, "workers": workers,
              "by_split": clip_index["split"].value_counts().to_dict()}
    write_json(root / paths.FRAMES_REPORT, report)
    return report


def pending_shards(cfg: Config, root: Path) -> list[dict]:
    """Unfinished shards as plain jobs for `run_job`, on any executor (a Prefect task runner, Dask).
    Running them first leaves the stage only the collecting; what it would compute is identical."""
    spec = FrameSpec.from_config(cfg)
    jobs = []
    for table, col, kind in ((paths.VALID_CLIPS, "video_path", "clips"), (paths.VALID_IMAGES, "image_path", "images")):
        folder = root / paths.FRAMES / kind
        for shard in plan_shards(pd.read_parquet(root / table), col, kind, spec, cfg.frames.shard_size):
            if not (folder / f"{shard['key']}.json").exists():
                jobs.append({"shard": shard, "root": str(root), "folder": str(folder), "spec": spec.__dict__,
                             "kind": kind, "timeout_s": cfg.frames.decode_timeout_s})
    return jobs


def run_job(job: dict) -> str:
    Path(job["folder"]).mkdir(parents=True, exist_ok=True)
    extract_shard(job["shard"], job["root"], job["folder"], FrameSpec(**job["spec"]), job["kind"], job["timeout_s"])
    return job["shard"]["key"]


def extract(table: pd.DataFrame, path_col: str, kind: str, root: Path, spec: FrameSpec, shard_size: int,
            workers: int, timeout_s: float = 120) -> tuple[pd.DataFrame, list[dict]]:
    """Run every unfinished shard (in parallel), drop stale ones, return the index and the rejects."""
    folder = root / paths.FRAMES / kind
    folder.mkdir(parents=True, exist_ok=True)
    plan = plan_shards(table, path_col, kind, spec, shard_size)
    todo = [s for s in plan if not (folder / f"{s['key']}.json").exists()]
    log.info("%s: %d shard(s), %d finished before, %d to run on %d worker(s)", kind, len(plan), len(plan) - len(todo),
             len(todo), workers)
    _run_shards(todo, root, folder, spec, workers, kind, timeout_s)
    _drop_stale(folder, {s["key"] for s in plan})
    return _collect(plan, folder, kind)


def plan_shards(table: pd.DataFrame, path_col: str, kind: str, spec: FrameSpec, shard_size: int) -> list[dict]:
    shards = []
    for start in range(0, len(table), shard_size):
        part = table.iloc[start : start + shard_size]
        ids, files = part["sample_id"].tolist(), part[path_col].tolist()
        content = part["source_md5"].tolist() if "source_md5" in part else files
        spans = _spans(part)
        blob = json.dumps([FORMAT, kind, spec.__dict__, ids, files, content, spans], ensure_ascii=False)
        shard = {"key": hashlib.sha256(blob.encode()).hexdigest()[:20], "ids": ids, "paths": files}
        shards.append({**shard, "spans": spans} if any(spans) else shard)
    return shards


def _spans(part: pd.DataFrame) -> list:
    """[start_s, end_s] per row where the label gives a time span (71495's sentences), else None."""
    if "start_s" not in part or "end_s" not in part:
        return [None] * len(part)
    return [
        [float(a), float(b)] if pd.notna(a) and pd.notna(b) else None for a, b in zip(part["start_s"], part["end_s"])
    ]


def _run_shards(todo: list[dict], root: Path, folder: Path, spec: FrameSpec, workers: int, kind: str,
                timeout_s: float) -> None:
    if not todo:
        return
    from rich.progress import Progress

    jobs = [(s, str(root), str(folder), spec, kind, timeout_s) for s in todo]
    with Progress(transient=True) as bar:
        task = bar.add_task(f"frames: {kind}", total=len(jobs))
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                extract_shard(*job)
                bar.advance(task)
            return
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=_pool_context()) as pool:
            for fut in as_completed([pool.submit(extract_shard, *job) for job in jobs]):
                fut.result()
                bar.advance(task)


def _pool_context():
    """forkserver (the caller may be a threaded Prefect worker, where fork is unsafe), with this
    module imported once in the server so each worker starts in milliseconds."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def extract_shard(shard: dict, root: str, folder: str, spec: FrameSpec, kind: str, timeout_s: float) -> None:
    """Decode one shard; bad files (and files whose decoding runs past `timeout_s`) are recorded with their
    reason, never raised."""
    arrays, kept, rejects = [], [], []
    spans = shard.get("spans") or [None] * len(shard["ids"])
    for sample_id, rel, span in zip(shard["ids"], shard["paths"], spans):
        try:
            frames, idx = decoder().load(kind, Path(root) / rel, spec, span, timeout_s)
        except VideoError as exc:
            rejects.append({"sample_id": sample_id, "reason": str(exc)})
            continue
        arrays.append(frames)
        clip = {"indices": idx, "padded": len(set(idx)) < len(idx)} if kind == "clips" else {}
        kept.append({"sample_id": sample_id, **clip})
    folder = Path(folder)
    shape = (0, spec.num_frames, spec.size, spec.size, 3) if kind == "clips" else (0, spec.size, spec.size, 3)
    data = np.stack(arrays) if arrays else np.zeros(shape, np.uint8)
    tmp = folder / f"{shard['key']}.tmp.npy"
    np.save(tmp, data)
    os.replace(tmp, folder / f"{shard['key']}.npy")
    write_json(folder / f"{shard['key']}.json", {"kept": kept, "rejects": rejects})  # last: marks it finished


def _drop_stale(folder: Path, keys: set[str]) -> None:
    """Shards of other inputs or params are derived data: remove them (and any half-written file)."""
    for path in folder.iterdir():
        if path.name.split(".")[0] not in keys or ".tmp" in path.name:
            path.unlink()


def _collect(plan: list[dict], folder: Path, kind: str) -> tuple[pd.DataFrame, list[dict]]:
    rows, rejects = [], []
    for s in plan:
        meta = json.loads((folder / f"{s['key']}.json").read_text(encoding="utf-8"))
        for offset, item in enumerate(meta["kept"]):
            rows.append({**item, "shard": f"{kind}/{s['key']}.npy", "offset": offset})
        rejects += [{"kind": kind[:-1], **r} for r in meta["rejects"]]
    return pd.DataFrame(rows), rejects
