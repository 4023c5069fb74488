"""Every artifact path of the lifecycle, relative to the project root, written once.

The stage table (`kocap/pipeline.py`, and through it `dvc.yaml`) names these as each stage's outputs
and inputs; stage modules read them from here, never from another stage module.
"""

from __future__ import annotations

# ingest
RAW = "data/raw"
MANIFEST = "data/manifest.parquet"
IMAGE_MANIFEST = "data/images.parquet"
INGEST_REJECTS = "data/rejects/ingest.parquet"
INGEST_REPORT = "reports/ingest.json"
# validate
VALIDATED = "data/validated"
VALID_CLIPS = "data/validated/clips.parquet"
VALID_IMAGES = "data/validated/images.parquet"
VALIDATE_REJECTS = "data/rejects/validate.parquet"
VALIDATE_DOCS = "reports/validate"
VALIDATE_REPORT = "reports/validate.json"
# frames
FRAMES = "data/frames"
FRAMES_REJECTS = "data/rejects/frames.parquet"
FRAMES_REPORT = "reports/frames.json"
# assemble, align, finetune
BASE = "models/base"
ASSEMBLE_REPORT = "reports/assemble.json"
ALIGN = "models/align"
ALIGNED_PROJECTOR = "models/align/projector.safetensors"
ALIGN_REPORT = "reports/align.json"
ALIGN_PLOT = "reports/align_loss.png"
FINETUNE = "models/finetune"
ADAPTER = "models/finetune/adapter"
FINETUNE_REPORT = "reports/finetune.json"
FINETUNE_PLOT = "reports/finetune_loss.png"
# prefer (DPO after stage 2; `prefer.enabled`)
PREFER = "models/prefer"
PREFER_ADAPTER = "models/prefer/adapter"
PREFERENCES = "data/preferences.parquet"
PREFER_REPORT = "reports/prefer.json"
PREFER_PLOT = "reports/prefer_loss.png"
# evaluate, register
PREDICTIONS = "reports/predictions.parquet"
EVAL_HTML = "reports/eval.html"
METRICS = "reports/metrics.json"
COMPARE_REPORT = "reports/compare.json"  # `kocap compare`: every version on the current validation clips
COMPARE_PAGE = "reports/compare.html"  # the same, with each version's captions of the first clips
REGISTER_REPORT = "reports/register.json"
# not a stage output: where `kocap micro-preset` writes the micro preset's models
MICRO = "models/micro"
