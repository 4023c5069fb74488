"""Host memory against data size: align, finetune and evaluate on the micro preset (the production
formats at CPU size) with N and 10·N clips and images of the synthetic sample, each stage in its own
process. Prints each stage's peak RSS, the 10·N / N ratio (target <= 1.2) and the memory per row it
implies, then what the data-dependent part comes to for AI-Hub 71849 and the Korean MS-COCO captions.

    python benchmarks/scale.py              # N = 24 (clips and images); a few minutes on 2 cores
    python benchmarks/scale.py --n 40

The stages train one epoch: memory that grows with the data shows at any number of steps.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kocap.scratch import BIN, scratch_project, sh  # noqa: E402

PREPARE = ("ingest", "validate", "frames", "assemble")
MEASURED = {"align": "images", "finetune": "clips", "evaluate": "clips"}
REAL = {"71849 (~10,000 clips)": ("clips", 10_000), "MS-COCO ko (~600,000 pairs)": ("images", 600_000)}


def project_of(root: Path, n: int) -> Path:
    overrides = [
        "model.preset=micro",
        f"data.sample.num_clips={n}",
        f"data.sample.num_images={n}",
        "data.sample.clips_per_zip=60",
        "stage1.epochs=1",
        "stage2.epochs=1",
        "registry.min_clips=1",
    ]
    project = scratch_project(root, overrides, commit=True)
    sh([sys.executable, "-m", "kocap.cli", "micro-preset"], project)
    for stage in PREPARE:
        sh([sys.executable, "-m", "kocap.cli", "stage", stage], project, timeout=None)
    return project


def peak_rss_mb(project: Path, stage: str) -> tuple[float, float]:
    """(peak resident MB, seconds) of `kocap stage STAGE` run as its own process."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(project / ".prefect"),
        "PATH": str(BIN) + os.pathsep + os.environ["PATH"],
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kocap.cli", "stage", stage],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{stage} failed:\n{stderr.decode()[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    args = ap.parse_args()
    sizes = (args.n, 10 * args.n)
    peaks: dict[str, dict[int, float]] = {s: {} for s in MEASURED}
    with tempfile.TemporaryDirectory(prefix="kocap-scale-") as tmp:
        for n in sizes:
            t = time.perf_counter()
            project = project_of(Path(tmp) / f"n{n}", n)
            print(f"N={n}: prepared in {time.perf_counter() - t:.0f} s", flush=True)
            for stage in MEASURED:
                peak, seconds = peak_rss_mb(project, stage)
                peaks[stage][n] = peak
                print(f"  {stage:<9} peak RSS {peak:7.0f} MB  ({seconds:.0f} s)", flush=True)
    print(f"\n| stage | rows | peak RSS at N={sizes[0]} | at 10·N={sizes[1]} | ratio | MB per row |")
    print("|---|---|---|---|---|---|")
    slope = {}
    for stage, rows in MEASURED.items():
        low, high = peaks[stage][sizes[0]], peaks[stage][sizes[1]]
        slope[stage] = max(0.0, (high - low) / (sizes[1] - sizes[0]))
        print(f"| {stage} | {rows} | {low:.0f} MB | {high:.0f} MB | {high / low:.2f}x | {slope[stage]:.3f} |")
    print("\nData-dependent host memory at real size (the rows times MB per row; add the model's own):")
    for name, (rows, count) in REAL.items():
        for stage, kind in MEASURED.items():
            if kind == rows:
                print(f"  {name}, {stage}: {slope[stage] * count / 1024:.2f} GB")


if __name__ == "__main__":
    main()
