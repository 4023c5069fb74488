"""Host memory against data size: align, finetune and evaluate on the micro preset (the production
formats at CPU size) with N and 10·N clips and images of the synthetic sample, each stage in its own
process. Prints each stage's peak RSS, the 10·N / N ratio (target <= 1.2), and the memory per row
between the two largest sizes, then what that data-dependent part comes to for AI-Hub 71849 and the
Korean MS-COCO captions.

    python benchmarks/scale.py                  # N = 24 and 10·N = 240 (clips and images)
    python benchmarks/scale.py --n 24 --also 480

Below ~110 clips the per-row figure is not the growth at real size: the validation split (15%) has
fewer clips than one evaluation shard (16) and the train split fewer than one feature batch, so the
peak still rises as those fill. `--also` adds a size past that point; the slope between the two
largest sizes is the one that extrapolates. The stages train one epoch and captions are generated
with a fixed budget of 32 new tokens (the key-value cache depends on the budget, not on the clips):
memory that grows with the data shows at any number of steps.
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
        "data.sample.val_frac=0.15",  # the split these figures were measured on (the default is 6% of 720)
        f"data.sample.num_images={n}",
        "data.sample.clips_per_zip=60",
        "stage1.epochs=1",
        "stage2.epochs=1",
        "registry.min_clips=1",
        "eval.max_new_tokens=32",
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
    ap.add_argument("--also", type=int, nargs="*", default=[], help="further sizes (rows), e.g. 480")
    args = ap.parse_args()
    sizes = sorted({args.n, 10 * args.n, *args.also})
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
    report(peaks, sizes, args.n)


def report(peaks: dict, sizes: list[int], n: int) -> None:
    a, b = sizes[-2], sizes[-1]
    header = " | ".join(f"N={s}" for s in sizes)
    print(f"\n| stage | rows | {header} | 10·N / N | MB per row ({a} to {b}) |")
    print("|---|---|" + "---|" * len(sizes) + "---|---|")
    slope = {}
    for stage, rows in MEASURED.items():
        slope[stage] = max(0.0, (peaks[stage][b] - peaks[stage][a]) / (b - a))
        figures = " | ".join(f"{peaks[stage][s]:.0f} MB" for s in sizes)
        ratio = peaks[stage][10 * n] / peaks[stage][n]
        print(f"| {stage} | {rows} | {figures} | {ratio:.2f}x | {slope[stage]:.3f} |")
    print("\nData-dependent host memory at real size (the rows times MB per row; add the model's own):")
    for name, (rows, count) in REAL.items():
        for stage, kind in MEASURED.items():
            if kind == rows:
                print(f"  {name}, {stage}: {slope[stage] * count / 1024:.2f} GB")


if __name__ == "__main__":
    main()
