"""Evaluation shards on threads: torch's intra-op threads per worker (issue 18 §4; the brief measured two
lifecycle runs at once each ~6x as long as one alone on 2 cores: OpenMP threads oversubscribe them).

    python benchmarks/shard_threads.py PROJECT [--clips 16] [--repeats 3]

PROJECT is a trained project (`kocap run` done). Captions two shards of `--clips` validation clips with the
project's registered pipeline (`Captioner`, cached features) three ways, `--repeats` times each, and prints
the median wall time and its ratio to the first: one after the other at torch's default thread count (the
baseline); on two threads at the default count (what `ops.task_runner: thread` did); on two threads with
`runtime.share_cores(2)` (workers x threads <= cores, what the shard tasks now do).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kocap import paths  # noqa: E402
from kocap.config import load_config  # noqa: E402
from kocap.data.rows import split_rows  # noqa: E402
from kocap.model import runtime  # noqa: E402
from kocap.model.captioner import Captioner, trained_adapter  # noqa: E402
from kocap.model.features import FeatureStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("project", type=Path)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=int, default=64)
    a = ap.parse_args()
    cfg = load_config(a.project / "params.yaml")
    captioner = Captioner.load(a.project / paths.BASE, trained_adapter(cfg, a.project), cfg, a.budget)
    val = split_rows(a.project, "val")
    store = FeatureStore(captioner.model, a.project)
    shards = [store.get(val.iloc[i * a.clips : (i + 1) * a.clips]) for i in range(2)]
    default = torch.get_num_threads()

    def caption(features):
        return captioner.caption_features(features, batch_size=a.clips)

    def sequential():
        torch.set_num_threads(default)
        return [caption(f) for f in shards]

    def on_threads(share: bool):
        def run():
            torch.set_num_threads(default)
            if share:
                runtime.share_cores(2)
            with ThreadPoolExecutor(2) as pool:
                return list(pool.map(caption, shards))

        return run

    ways = {"sequential": sequential, "2 threads": on_threads(False), "2 threads, shared cores": on_threads(True)}
    outputs, times = {}, {k: [] for k in ways}
    for _ in range(a.repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            outputs[name] = way()
            times[name].append(time.perf_counter() - start)
    torch.set_num_threads(default)
    base = statistics.median(times["sequential"])
    print(f"cores {runtime.cores()}, torch default threads {default}, 2 shards x {a.clips} clips, budget {a.budget}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:26s} median {med:6.2f} s  ratio {med / base:.2f}  (runs: {', '.join(f'{t:.2f}' for t in ts)})")
    assert outputs["sequential"] == outputs["2 threads"] == outputs["2 threads, shared cores"], "captions differ"


if __name__ == "__main__":
    main()
