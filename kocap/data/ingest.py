"""The ingest stage: AI-Hub (or the embedded sample, through the loopback emulator) -> raw files,
a manifest, and a rejects table.

    kocap stage ingest

Incremental and append-only: the stage keeps the file tree it last landed
(`data/raw/<source>-<key>/tree_snapshot.json`) and downloads only new or changed filekeys. Extracted
files are never overwritten; the manifest is rebuilt from everything landed so far.
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import pandas as pd

from ..aihub.client import AIHubClient, ApiKey
from ..aihub.download import fetch, unpack
from ..aihub.errors import IncompleteDownloadError, TransferError, UnsafeArchiveError
from ..aihub.labels import LabelError, parser_for, read_label
from ..aihub.layout import classify
from ..aihub.tree import TreeFile, changed_files, snapshot_from_json, snapshot_id, snapshot_to_json
from .. import paths
from ..config import Config
from ..io import file_md5, write_json, write_parquet
from ..env import RunEnv

log = logging.getLogger(__name__)

SAMPLE_KEY = "kocap-sample-key"  # the loopback emulator's key for the embedded sample; not a secret
MANIFEST_COLUMNS = ["sample_id", "split", "clip_id", "video_path", "caption_ko", "start_s", "end_s", "duration_s",
                    "dataset_key", "filekey", "label_path", "label_filekey", "source_md5"]


@dataclass
class Source:
    """Where ingest reads from: a client for an AI-Hub server and the dataset key."""

    client: AIHubClient
    dataset_key: str
    name: str  # "sample" or "aihub": the raw folder is data/raw/<name>-<key>


@dataclass
class IngestReport:
    dataset_key: str
    snapshot_id: str
    downloaded: list[str] = field(default_factory=list)
    attempted: int = 0                                       # filekeys fetched this run (new or changed)
    failed: dict[str, str] = field(default_factory=dict)     # filekey -> why; quarantined, retried next time
    samples: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    images: int = 0
    conflicts: int = 0
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # filekeys of the selected tree not landed (so far)
    lost_share: float = 0.0  # their share of the selected tree, by the tree's sizes: in lineage and the gate


def run(cfg: Config, root: Path, env: RunEnv) -> dict:
    """Run the stage in project folder `root`; the key and server address come from `env`."""
    with open_source(cfg, env) as source:
        report = ingest(source, cfg, root)
    report.images = ingest_images(cfg, root)
    write_json(root / paths.INGEST_REPORT, report.__dict__)
    if report.failed and report.lost_share > cfg.data.aihub.max_failed_frac:
        raise IncompleteDownloadError(report.failed)  # too much is missing to train on: stop the line
    for filekey, why in report.failed.items():
        log.warning("filekey %s quarantined (%s); the rest goes on, and it is fetched again next time", filekey, why)
    return asdict(report)


def pending(cfg: Config, root: Path, env: RunEnv) -> tuple[str, list[str]]:
    """What the watcher asks: the server tree's snapshot id and the filekeys not landed yet (new or changed)."""
    with open_source(cfg, env) as source:
        tree = _select(source.client.tree(source.dataset_key), cfg.data.aihub.filekey_list())
        landed = _load_landed(root / paths.RAW / f"{source.name}-{source.dataset_key}")
    return snapshot_id(tree), [f.filekey for f in changed_files(landed, tree)]


@contextlib.contextmanager
def open_source(cfg: Config, env: RunEnv) -> Iterator[Source]:
    a = cfg.data.aihub
    if cfg.data.source == "aihub":
        client = AIHubClient(env.aihub_base_url() or a.base_url, env.aihub_key(), a.timeout_s)
        yield Source(client, a.dataset_key, "aihub")
        return
    from ..aihub.emulator import Emulator
    from ..sample.build import DATASET_KEY, build_aihub_sample

    with tempfile.TemporaryDirectory(prefix="kocap-sample-") as tmp:
        build_aihub_sample(Path(tmp), cfg.data.sample)
        with Emulator(Path(tmp), {SAMPLE_KEY}, part_size=cfg.data.sample.part_size) as emu:
            log.info("embedded sample served by the loopback AI-Hub emulator at %s", emu.url)
            yield Source(AIHubClient(emu.url, ApiKey(SAMPLE_KEY), a.timeout_s), DATASET_KEY, "sample")


def ingest(source: Source, cfg: Config, root: Path) -> IngestReport:
    raw = root / paths.RAW / f"{source.name}-{source.dataset_key}"
    tree = source.client.tree(source.dataset_key)
    wanted = _select(tree, cfg.data.aihub.filekey_list())
    landed = _load_landed(raw)
    todo = changed_files(landed, wanted)
    log.info("AI-Hub tree %s: %d files, %d new or changed", snapshot_id(tree), len(wanted), len(todo))
    report = IngestReport(source.dataset_key, snapshot_id(tree), attempted=len(todo))
    if todo:
        result = fetch(source.client, source.dataset_key, todo, raw / "archives", cfg.data.aihub.retries)
        report.failed, report.notes = result.failed, result.notes
        newly = [f for f in todo if f.filekey in result.landed]
        report.conflicts = _extract(newly, raw, cfg.data.aihub.keep_archives, report)
        newly = [f for f in newly if f.filekey not in report.failed]  # a refused archive is fetched again next time
        report.downloaded = [f.filekey for f in newly]
        landed = [f for f in landed if f.path not in {n.path for n in newly}] + newly
        write_json(raw / "tree_snapshot.json", {**snapshot_to_json(landed), "seen_snapshot_id": snapshot_id(tree)})
    report.missing, report.lost_share = lost_share(wanted, landed)
    manifest, rejects = build_manifest(raw, landed, source.dataset_key, root)
    where = {f.filekey: f.path for f in todo}
    failed = [{"label_path": where.get(k, ""), "sample_id": f"filekey-{k}", "reason": f"filekey {k} did not land: {why}"}
              for k, why in sorted(report.failed.items())]
    rejects = pd.concat([rejects, pd.DataFrame(failed, columns=rejects.columns)], ignore_index=True) if failed else rejects
    report.samples = manifest["split"].value_counts().to_dict()
    report.rejected = len(rejects)
    write_parquet(manifest, root / paths.MANIFEST)
    write_parquet(rejects, root / paths.INGEST_REJECTS)
    return report


def lost_share(wanted: list[TreeFile], landed: list[TreeFile]) -> tuple[list[str], float]:
    """The filekeys not landed and their share of the selected tree, weighed by the tree's sizes (a
    filekey may be one label file or an archive of a thousand clips). AI-Hub shows sizes rounded ("47 GB"):
    the midpoint is close enough for a share; where a size cannot be read, each filekey weighs the same."""
    have = {f.path for f in landed}
    missing = [f for f in wanted if f.path not in have]
    if not wanted:
        return [], 0.0
    bounds = [f.approx_bytes() for f in wanted]
    if any(high >= 1 << 62 for _, high in bounds):
        share = len(missing) / len(wanted)
    else:
        size = {f.path: (low + high) / 2 for f, (low, high) in zip(wanted, bounds)}
        share = sum(size[f.path] for f in missing) / sum(size.values())
    return sorted(f.filekey for f in missing), round(share, 4)


def _select(tree: list[TreeFile], filekeys: list[str] | None) -> list[TreeFile]:
    if filekeys is None:
        return tree
    known = {f.filekey for f in tree}
    missing = sorted(set(filekeys) - known)
    if missing:
        raise ValueError(f"filekeys not in the dataset tree: {', '.join(missing)} (see `kocap aihub tree KEY`)")
    return [f for f in tree if f.filekey in set(filekeys)]


def _load_landed(raw: Path) -> list[TreeFile]:
    path = raw / "tree_snapshot.json"
    return snapshot_from_json(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else []


def _extract(files: list[TreeFile], raw: Path, keep_archives: bool, report: IngestReport) -> int:
    conflicts = 0
    for f in files:
        dest = raw / "extracted" / f.path.removesuffix(".zip")
        try:
            out = unpack(raw / "archives" / f.path, dest, raw / "conflicts" / f.filekey, keep_archives)
        except (UnsafeArchiveError, TransferError) as exc:  # hostile, or a multi-volume set not whole yet
            report.failed[f.filekey] = str(exc)
            continue
        for c in out.conflicts if out else []:
            report.notes.append(f"{c.name}: changed upstream; the existing file is kept, the new one is in {c.parent}")
            conflicts += 1
    return conflicts


def build_manifest(raw: Path, landed: list[TreeFile], dataset_key: str, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per sample from every landed label archive; unusable labels go to the rejects table."""
    parse = parser_for(dataset_key)
    videos = _index_videos(raw, landed)
    checksums = _Checksums(raw / "checksums.json")
    rows, rejects = [], []
    for f in sorted(landed, key=lambda f: f.path):
        kind, split = classify(f.path)
        folder = raw / "extracted" / f.path.removesuffix(".zip")
        if kind != "label" or not folder.is_dir():
            continue
        for label in sorted(folder.rglob("*.json")):
            rel = label.relative_to(root).as_posix()
            try:
                samples, span_rejects = parse(read_label(label), label.stem)
            except LabelError as exc:
                rejects.append({"label_path": rel, "sample_id": label.stem, "reason": str(exc)})
                continue
            rejects += [{"label_path": rel, "sample_id": label.stem, "reason": r} for r in span_rejects]
            video, why = pair_video(videos, split, label.stem)
            if video is None:
                rejects.append({"label_path": rel, "sample_id": label.stem, "reason": why})
                continue
            vpath, vkey = video
            for s in samples:
                rows.append({"sample_id": s.sample_id, "split": split or "train", "clip_id": s.clip_id,
                             "video_path": vpath.relative_to(root).as_posix(), "caption_ko": s.caption_ko,
                             "start_s": s.start_s, "end_s": s.end_s, "duration_s": s.duration_s,
                             "dataset_key": dataset_key, "filekey": vkey, "label_path": rel, "label_filekey": f.filekey,
                             "source_md5": checksums.md5(vpath, raw)})
    checksums.save()
    return (pd.DataFrame(rows, columns=MANIFEST_COLUMNS),
            pd.DataFrame(rejects, columns=["label_path", "sample_id", "reason"]))


class VideoIndex(NamedTuple):
    """Every (path, filekey) of a source file, by (split, stem) and by stem alone; split None where the
    archive's path names none. Lists, not one entry: two files with one stem must not overwrite each other.
    The stem index keeps a split-less label's lookup constant-time (a scan would be quadratic in the clips)."""

    by_split: dict
    by_stem: dict


def _index_videos(raw: Path, landed: list[TreeFile]) -> VideoIndex:
    index = VideoIndex({}, {})
    for f in landed:
        kind, split = classify(f.path)
        folder = raw / "extracted" / f.path.removesuffix(".zip")
        if kind == "label" or not folder.is_dir():
            continue
        for video in sorted(folder.rglob("*.mp4")):
            index.by_split.setdefault((split, video.stem), []).append((video, f.filekey))
            index.by_stem.setdefault(video.stem, []).append((video, f.filekey))
    return index


def pair_video(videos: VideoIndex, split: str | None, stem: str) -> tuple[tuple | None, str]:
    """The one source file for a label: same split and stem; a split-less source only when the split has
    none of that name; any split for a split-less label. Missing or ambiguous is refused, never guessed
    (a guess could train on a validation video, or caption one clip with another's label)."""
    if split is None:  # any source of that name, whatever its split
        found = videos.by_stem.get(stem, [])
    else:
        found = videos.by_split.get((split, stem)) or videos.by_split.get((None, stem), [])
    where = f" in the {split} split" if split else ""
    if not found:
        return None, f"video missing: no source file {stem}.mp4{where}"
    if len(found) > 1:
        names = ", ".join("/".join(v.parts[-3:]) for v, _ in found[:3])
        return None, f"ambiguous: {len(found)} source files named {stem}.mp4{where} ({names}); refused, not guessed"
    return found[0], ""


class _Checksums:
    """md5 of raw files, remembered by path and size (raw files never change in place)."""

    def __init__(self, path: Path):
        self.path = path
        self.known = json.loads(path.read_text()) if path.exists() else {}

    def md5(self, file: Path, raw: Path) -> str:
        key, size = file.relative_to(raw).as_posix(), file.stat().st_size
        if key not in self.known or self.known[key][0] != size:
            self.known[key] = [size, file_md5(file)]
        return self.known[key][1]

    def save(self) -> None:
        write_json(self.path, dict(sorted(self.known.items())))


def ingest_images(cfg: Config, root: Path) -> int:
    """The stage-1 Korean image-caption set: the embedded sample's stills, or a real set (images.py)."""
    from ..sample.build import build_image_set

    images = cfg.data.images
    if images.source != "sample":
        from .images import image_rows, land_images

        captions, folder = (root / images.captions), (root / images.folder) if images.folder else None  # abs stays
        folder = folder or (captions if captions.is_dir() else captions.parent)
        rows = image_rows(images.source, captions, folder, images.caption_field)
        table = land_images(rows, folder, root / paths.RAW / f"images-{images.source}", root)
        write_parquet(table, root / paths.IMAGE_MANIFEST)
        return len(table)

    folder = root / paths.RAW / "images-sample"
    if not (folder / "captions.jsonl").exists() or _count_lines(folder / "captions.jsonl") != cfg.data.sample.num_images:
        build_image_set(folder, cfg.data.sample)
    rows = [json.loads(line) for line in (folder / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    table = pd.DataFrame({"image_id": [Path(r["image"]).stem for r in rows],
                          "image_path": [(folder / r["image"]).relative_to(root).as_posix() for r in rows],
                          "caption_ko": [r["caption_ko"] for r in rows]})
    write_parquet(table, root / paths.IMAGE_MANIFEST)
    return len(table)


def _count_lines(path: Path) -> int:
    return sum(1 for _ in path.open(encoding="utf-8"))
