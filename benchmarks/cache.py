"""What the cache guarantees, measured in one go on a scratch copy of the project:

    python benchmarks/cache.py                  # the default params (what `make demo` runs)
    python benchmarks/cache.py --quick          # a small sample and short training (a few minutes)

1. a cold `kocap run` (the baseline);
2. the same run again, nothing changed: target <= 10% of the cold time, every stage skipped/Cached;
3. after changing only an `eval` param: only evaluate and register run;
4. after changing `frames.num_frames`: frames and every stage after it run, ingest and validate do not.
After each run `dvc status` must be clean. Prints seconds, the ratio to the cold run, what ran.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kocap.pipeline import STAGES  # noqa: E402
from kocap.scratch import BIN, scratch_project, sh  # noqa: E402

QUICK = [
    "data.sample.num_clips=48",
    "data.sample.val_frac=0.15",
    "data.sample.clips_per_zip=16",
    "data.sample.num_images=24",
    "model.tiny_lm.pretrain_steps=50",
    "stage2.epochs=2",
]
ALL = [s.name for s in STAGES]
AFTER_FRAMES = ALL[ALL.index("frames") :]


def timed_run(project: Path, overrides: list[str]) -> dict:
    t = time.perf_counter()
    proc = sh([sys.executable, "-m", "kocap.cli", "run", *overrides], project, timeout=None)
    seconds = time.perf_counter() - t
    summary = json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])
    status = json.loads(sh([str(BIN / "dvc"), "status", "--json"], project).stdout)
    logs = proc.stdout + proc.stderr
    return {
        "seconds": seconds,
        "ran": [s for s in ALL if summary[s]["ran"]],
        "clean": status == {},
        "cached": sum(f"Task run '{s}-" in line and "Cached" in line for s in ALL for line in logs.splitlines()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small sample and short training")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kocap-cache-bench-") as tmp:
        project = scratch_project(Path(tmp), QUICK if args.quick else [])
        steps = [
            ("cold", [], ALL),
            ("nothing changed", [], []),
            ("nothing changed, again", [], []),
            ("eval.seed changed", ["eval.seed=1"], ["evaluate", "register"]),
            ("frames.num_frames changed", ["frames.num_frames=6"], AFTER_FRAMES),
        ]
        cold = None
        print(f"{'run':<28}{'seconds':>9}{'x cold':>8}  {'clean':<6}{'Cached':>7}  stages run (expected)")
        failures = []
        for label, overrides, expected in steps:
            r = timed_run(project, overrides)
            cold = cold or r["seconds"]
            ok = r["clean"] and r["ran"] == expected
            failures += [] if ok else [label]
            print(
                f"{label:<28}{r['seconds']:>9.1f}{r['seconds'] / cold:>8.3f}  {str(r['clean']):<6}{r['cached']:>7}  "
                f"{','.join(r['ran']) or '-'}{'' if ok else '   (expected ' + (','.join(expected) or '-') + ')'}"
            )
            if label == "nothing changed" and r["seconds"] > 0.10 * cold:
                failures.append("no-change run above 10% of cold")
        print("all guarantees held" if not failures else f"FAILED: {'; '.join(failures)}")
        sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
