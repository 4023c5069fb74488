"""The preference stage on and off, same clips: held-out preference accuracy, attribute accuracy, the
share of repeated sentences and of captions cut by the budget (what DPO is meant to move).

    python benchmarks/prefer.py                       # 48-clip embedded sample, tiny preset
    python benchmarks/prefer.py --clips 240 prefer.epochs=3

Stages run in-process on a scratch folder (training untracked, evaluation into a scratch MLflow DB):
ingest .. finetune once, evaluate with prefer off, then prefer and evaluate with it on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    import pandas as pd

    from kocap import paths
    from kocap.config import load_config
    from kocap.data import frames, ingest, validate
    from kocap.env import RunEnv
    from kocap.evaluate import evaluation
    from kocap.train import align, assemble, finetune, prefer

    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("overrides", nargs="*", help="params, e.g. prefer.epochs=3")
    args = ap.parse_args()
    # 15% for validation: the default's 6% (of 720 clips) leaves a small sample few clips to score
    base = [f"data.sample.num_clips={args.clips}", "data.sample.val_frac=0.15", "data.sample.num_images=24"]
    base += ["registry.min_clips=1"]
    env = RunEnv({}, track=False)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="kocap-prefer-") as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"  # evaluate logs its metrics
        off = load_config(REPO / "params.yaml", [*base, *args.overrides, "prefer.enabled=false"])
        on = load_config(REPO / "params.yaml", [*base, *args.overrides, "prefer.enabled=true"])
        for stage in (ingest, validate, frames, assemble, align, finetune):
            stage.run(off, root, env)
        for name, cfg in (("off", off), ("on", on)):
            t = time.perf_counter()
            report = prefer.run(cfg, root, env)
            metrics = evaluation.run(cfg, root, env)
            predictions = pd.read_parquet(root / paths.PREDICTIONS)["prediction"].tolist()
            rows[name] = {
                "pairs": report.get("pairs"),
                "heldout accuracy": (
                    report.get("heldout_preference_accuracy_before"),
                    report.get("heldout_preference_accuracy_after"),
                ),
                "heldout accuracy, other clips' videos": report.get("heldout_preference_accuracy_other_videos"),
                "attribute accuracy": metrics.get("attribute_accuracy"),
                "repeated sentences": sum(map(prefer.repeated_share, predictions)) / len(predictions),
                "cut by budget": metrics["cut_share"],
                "unique share": metrics["unique_share"],
                "primary": metrics["primary"],
                "seconds": round(time.perf_counter() - t),
            }
            print(name, json.dumps(rows[name], ensure_ascii=False), flush=True)
    print(
        "\n| prefer | pairs | held-out accuracy (before → after) | attribute accuracy | repeated sentences "
        "| cut by budget | unique share | primary |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        before, after = r["heldout accuracy"]
        held = f"{before:.2f} → {after:.2f}" if before is not None and after is not None else "–"
        print(
            f"| {name} | {r['pairs'] or '–'} | {held} | {r['attribute accuracy']:.3f} | {r['repeated sentences']:.3f} "
            f"| {r['cut by budget']:.3f} | {r['unique share']:.3f} | {r['primary']:.3f} |"
        )


if __name__ == "__main__":
    main()
