"""The MLflow pyfunc captioner ("models from code"): input video paths (a list, or a DataFrame with
`video_path`), output one Korean caption per video. It packages the stage-2 adapter (LoRA +
projector) with the tokenizer, the config (frames, preprocessing, prompt, decoding) and a reference
to the base checkpoint by its DVC hash (resolved from the DVC cache or remote, see base_ref.py: the
base is stored once), and captions through the same code as training and evaluation.

Bad input gets a clear error per item (the `error` column; empty when fine) and never fails the batch:
a missing file, a non-video. An empty or oversized request is refused whole with a clear message.
"""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

MAX_ITEMS = 64  # an oversized request is refused whole, with the limit in the message


class KocapCaptioner(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from kocap.config import Config
        from kocap.evaluate.captioner import Captioner
        from kocap.registry.base_ref import resolve

        cfg = Config.model_validate(json.loads(Path(context.artifacts["config"]).read_text(encoding="utf-8")))
        base = resolve(json.loads(Path(context.artifacts["base_ref"]).read_text(encoding="utf-8")))
        self.captioner = Captioner.load(base, Path(context.artifacts["adapter"]), cfg)

    def predict(self, context, model_input, params=None):
        return caption_batch(self.captioner, paths_of(model_input))


def paths_of(model_input) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        if "video_path" not in model_input.columns:
            raise ValueError("input DataFrame needs a 'video_path' column")
        return [str(p) for p in model_input["video_path"]]
    if isinstance(model_input, (str, Path)):
        return [str(model_input)]
    return [str(p) for p in model_input]


def caption_batch(captioner, paths: list[str]) -> pd.DataFrame:
    """One row per input: the caption, or (caption "") the error that kept it from being captioned."""
    from kocap.data.video import VideoError

    if not paths:
        raise ValueError("no videos given: send at least one video path")
    if len(paths) > MAX_ITEMS:
        raise ValueError(f"{len(paths)} videos in one request; at most {MAX_ITEMS}: split the request")
    captions, errors = [""] * len(paths), [""] * len(paths)
    good, frames = [], []
    for i, p in enumerate(paths):  # decode each on its own, so one bad file fails only itself
        if not Path(p).is_file():
            errors[i] = f"file not found: {p}"
            continue
        try:
            frames.append(captioner.frames(Path(p)))
            good.append(i)
        except (VideoError, OSError, ValueError) as exc:
            errors[i] = str(exc)
    if good:  # then caption the good ones together, in batches
        for i, caption in zip(good, captioner.caption_frames(np.stack(frames))):
            captions[i] = caption
    return pd.DataFrame({"video_path": paths, "caption": captions, "error": errors})


mlflow.models.set_model(KocapCaptioner())
