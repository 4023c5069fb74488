"""What the frozen tower's features carry, and whether a trained model uses them (issue: a model that sees).

    python benchmarks/probe.py [PROJECT]      # a project after `kocap run` (frames, base, adapter)

Per attribute of the embedded sample (sample/facts.py), a ridge one-vs-rest linear probe trained on the
training clips and scored on the validation clips, on: the pooled video features the LM receives
(all tokens), the same averaged per frame, and raw frames downsampled to 8x8 px; beside the
majority class and the trained model's attribute accuracy (reports/metrics.json). The ridge
strength is picked on the validation clips, so the probe figures are optimistic upper bounds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a bare copy

from kocap import paths  # noqa: E402
from kocap.data.rows import frame_reader, split_rows  # noqa: E402
from kocap.model.build import load_base  # noqa: E402
from kocap.model.features import FeatureStore  # noqa: E402
from kocap.sample.facts import FACTS, read_facts  # noqa: E402


def ridge_accuracy(xtr, ytr, xva, yva) -> float:
    """Best validation accuracy of a one-vs-rest ridge classifier over a few strengths."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    classes = sorted(set(ytr))
    targets = np.stack([(np.array(ytr) == c).astype(float) * 2 - 1 for c in classes], 1)
    gram = xtr @ xtr.T  # dual form: few clips, many features
    best = 0.0
    for lam in (0.1, 1, 10, 100, 1000, 1e4):
        alpha = np.linalg.solve(gram + lam * np.eye(len(xtr)), targets)
        scores = (xva @ xtr.T) @ alpha
        pred = [classes[i] for i in scores.argmax(1)]
        best = max(best, float(np.mean([p == y for p, y in zip(pred, yva)])))
    return best


def views(root: Path, rows, store) -> dict[str, np.ndarray]:
    feats = store.get(rows).numpy()  # (N, frames * tokens, width)
    read = frame_reader(root, rows)  # each shard mapped once
    frames = np.stack([read(i) for i in range(len(rows))])  # (N, k, S, S, 3)
    n, k, s = frames.shape[:3]
    small = frames.reshape(n, k, 8, s // 8, 8, s // 8, 3).mean((3, 5))
    return {
        "pooled features, all tokens": feats.reshape(len(feats), -1),
        "pooled features, frame means": feats.reshape(len(feats), k, -1, feats.shape[-1])
        .mean(2)
        .reshape(len(feats), -1),
        "raw 8x8 pixels": small.reshape(n, -1),
    }


def main(root: Path) -> None:
    model = load_base(root / paths.BASE, quantize=False)
    store = FeatureStore(model, root)
    train, val = split_rows(root, "train"), split_rows(root, "val")
    ftr = [read_facts(c) for c in train["caption_ko"]]
    fva = [read_facts(c) for c in val["caption_ko"]]
    vtr, vva = views(root, train, store), views(root, val, store)
    metrics_file = root / paths.METRICS
    trained = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    header = ["fact", "majority", *vtr, "trained model"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for attr in FACTS:
        ytr, yva = [f[attr] for f in ftr], [f[attr] for f in fva]
        majority = max(yva.count(c) for c in set(yva)) / len(yva)
        cells = [f"{ridge_accuracy(vtr[v], ytr, vva[v], yva):.2f}" for v in vtr]
        model_acc = trained.get(f"attribute_{attr}")
        print(
            f"| {attr} | {majority:.2f} | "
            + " | ".join(cells)
            + f" | {'' if model_acc is None else f'{model_acc:.2f}'} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
