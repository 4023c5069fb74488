"""Frame extraction throughput: the frames stage against what public pipelines do.

    .venv/bin/python benchmarks/frames.py [--clips 6] [--repeats 3]

Generates H.264 clips at 640x360 / 15 s and 1280x720 / 60 s (30 fps), then measures clips per
second, in one run, for: (a) the frames stage (decord seek + resize/crop, `frames.workers` processes),
(b) PyAV decoding every frame sequentially and keeping 8 (the HF notebook, LLaMA-Factory, ms-swift),
(c) decord `get_batch` in one process with decord's default threads (all cores) and (c1) with one
thread. Prints medians over repeats and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd

from kocap import paths
from kocap.data import frames
from kocap.data.video import FrameSpec, encode_mp4, sample_indices


def make_clip(path: Path, width: int, height: int, seconds: int, fps: int = 30) -> None:
    rng = np.random.default_rng(width + seconds)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    moving = (np.roll(base, 4 * t, axis=1) for t in range(seconds * fps))  # real inter-frame work for decoders
    path.write_bytes(encode_mp4(moving, fps, codec="libx264", options={"preset": "ultrafast", "crf": "23"}))


def pyav_decode_all(path: Path, k: int = 8) -> np.ndarray:
    with av.open(str(path)) as c:
        all_frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return np.stack([all_frames[i] for i in sample_indices(len(all_frames), k)])


def decord_batch(path: Path, k: int = 8, threads: int = 0) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)  # 0: decord's default, all cores
    return vr.get_batch(sample_indices(len(vr), k)).asnumpy()


def stage(videos: list[Path], root: Path, workers: int) -> None:
    table = pd.DataFrame({"sample_id": [p.stem for p in videos], "video_path": [p.name for p in videos]})
    spec = FrameSpec(8, 336, "pad", 8294400)
    out = root / paths.FRAMES
    if out.exists():
        import shutil

        shutil.rmtree(out)  # measure the work, not the resume
    frames.extract(table, "video_path", "clips", root, spec, shard_size=1, workers=workers)


def timed(fn, n: int, repeats: int) -> float:
    """Median clips per second over repeats."""
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for label, (w, h, sec) in {"640x360/15s": (640, 360, 15), "1280x720/60s": (1280, 720, 60)}.items():
            paths = [root / f"{label.replace('/', '_')}_{i}.mp4" for i in range(args.clips)]
            for p in paths:
                make_clip(p, w, h, sec)
            a = timed(lambda ps=paths: stage(ps, root, args.workers), len(paths), args.repeats)
            b = timed(lambda ps=paths: [pyav_decode_all(p) for p in ps], len(paths), args.repeats)
            c = timed(lambda ps=paths: [decord_batch(p) for p in ps], len(paths), args.repeats)
            c1 = timed(lambda ps=paths: [decord_batch(p, threads=1) for p in ps], len(paths), args.repeats)
            print(
                f"{label}: (a) frames stage, {args.workers} workers: {a:.2f} clips/s | (b) PyAV decode-all: "
                f"{b:.2f} | (c) decord get_batch, 1 process, default threads: {c:.2f} | (c1) same, 1 thread: "
                f"{c1:.2f} | a/b = {a / b:.2f}x, a/c = {a / c:.2f}x, a/c1 = {a / c1:.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
