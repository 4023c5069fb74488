"""A project whose tiny base is assembled another way, for `benchmarks/loss_share.py` (issue 18).

    kocap run                                                   # or `dvc repro frames`: PROJECT with data/
    python benchmarks/base_variant.py PROJECT OUT corpus=generated   # LM pre-trained on 4,800 fresh paragraphs
    python benchmarks/base_variant.py PROJECT OUT corpus=clips       # ... on the training captions without the stills'
    python benchmarks/base_variant.py PROJECT OUT heads=4,4,32       # attention heads, KV heads, head size
    python benchmarks/loss_share.py OUT steps=1200

Copies PROJECT's code, config and data to OUT (no models, no feature cache), assembles the base with
kocap's assemble stage and one prototype patched over it, and runs stage 1 (`kocap stage align`). Every
other part is the project's: same clips, same params (a larger stage 1 is a params change in PROJECT).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a bare copy

from learning_experiments import generated_paragraphs  # noqa: E402  (beside this file)

import kocap.train.assemble as assemble_stage  # noqa: E402
from kocap import pipeline  # noqa: E402
from kocap.config import load_config  # noqa: E402
from kocap.env import RunEnv  # noqa: E402
from kocap.model import build  # noqa: E402


def patch(opts: dict) -> None:
    if opts.get("corpus"):
        assemble_stage.corpus = {
            "generated": lambda root: generated_paragraphs(4800),  # each read once in pre-training
            "clips": assemble_stage.training_captions,  # without the stills' captions
        }[opts["corpus"]]
    if opts.get("heads"):
        heads, kv, size = (int(x) for x in opts["heads"].split(","))
        original = build.tiny_text_config

        def config(vocab_size: int):
            c = original(vocab_size)
            c.num_attention_heads, c.num_key_value_heads, c.head_dim = heads, kv, size
            return c

        assemble_stage.tiny_text_config = config


def main(project: Path, out: Path, opts: dict) -> None:
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(project, out, ignore=shutil.ignore_patterns("models", ".kocap-cache", "mlruns", "mlflow.db"))
    patch(opts)
    print(pipeline.run_stage("assemble", load_config(out / "params.yaml"), out, RunEnv.from_environ()))
    subprocess.run([str(Path(sys.executable).parent / "kocap"), "stage", "align"], cwd=out, check=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), dict(a.split("=", 1) for a in sys.argv[3:]))
