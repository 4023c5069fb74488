"""The MLflow pyfunc captioner ("models from code"): one Korean caption per video.

Input: a DataFrame with a `video_b64` column (the video file's bytes, base64) or, only where the
server is started with `KOCAP_SERVE_ROOT=DIR`, a `video_path` column of files inside DIR; a list of
paths or of bytes also works in-process. Output: `caption` and `error` (empty when fine) per row.

It packages the stage-2 adapter (LoRA + projector) with the tokenizer, the config (frames,
preprocessing, prompt, decoding, media limits) and a reference to the base checkpoint by its DVC
hash (resolved from the DVC cache or remote, see base_ref.py), and captions through the same code as
training and evaluation.

A server is a narrow surface: it reads no path it was not allowed to (and answers the same for a
missing file and a forbidden one), refuses videos over the size cap and outside training's media
limits (duration, fps, resolution), and one bad item never fails the batch. An empty or oversized
request is refused whole with kocap's message (HTTP 400, no stack trace).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

MAX_ITEMS = 64  # an oversized request is refused whole, with the limit in the message
MAX_VIDEO_MB = 256  # per video sent as bytes
MAX_REQUEST_MB = 1024  # all videos of one request together (64 x 256 MB would be 16 GB in memory)
MAX_PATH = 4096
ROOT_ENV = "KOCAP_SERVE_ROOT"
_COLUMNS = ("video_b64", "video_path")
_log = logging.getLogger(__name__)


class RequestRefused(ValueError):
    """The whole request is unusable (empty, too many items, no usable column)."""


class KocapCaptioner(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from kocap.config import Config
        from kocap.model.captioner import Captioner
        from kocap.registry.base_ref import resolve

        cfg = Config.model_validate(json.loads(Path(context.artifacts["config"]).read_text(encoding="utf-8")))
        if "base_ref" in context.artifacts:
            base = resolve(json.loads(Path(context.artifacts["base_ref"]).read_text(encoding="utf-8")))
        else:  # versions registered before the base was stored once carry a copy
            base = Path(context.artifacts["base"])
        self.captioner = Captioner.load(base, Path(context.artifacts["adapter"]), cfg)

    def predict(self, context, model_input, params=None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

        try:
            items = items_of(model_input)
        except RequestRefused as exc:  # a 400 with kocap's message, no stack trace
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        try:
            return caption_batch(self.captioner, items, allowed_root())
        except Exception as exc:  # the trace stays in the server's log; the answer names no path
            _log.exception("captioning failed")
            raise MlflowException(f"captioning failed: {_message(exc)}", error_code=INTERNAL_ERROR) from None


def allowed_root() -> Path | None:
    root = os.environ.get(ROOT_ENV, "").strip()
    return Path(root).resolve() if root else None


def items_of(model_input) -> list[tuple[str, object]]:
    """(kind, value) per requested video: ("b64", text), ("bytes", data) or ("path", text)."""
    if isinstance(model_input, pd.DataFrame):
        if "video_b64" in model_input.columns:
            items = [("b64", v) for v in model_input["video_b64"]]
        elif "video_path" in model_input.columns:
            items = [("path", v) for v in model_input["video_path"]]
        else:
            raise RequestRefused(
                "send a 'video_b64' column (base64 of each video file), or 'video_path' where the "
                f"server allows paths ({ROOT_ENV})"
            )
    elif isinstance(model_input, dict):  # the scoring server's {"inputs": {"video_b64": [...]}}
        column = next((k for k in _COLUMNS if k in model_input), "")
        return items_of(pd.DataFrame({column: np.asarray(model_input.get(column, [])).reshape(-1)}))
    elif isinstance(model_input, (str, Path, bytes)):
        items = [_kind(model_input)]
    elif isinstance(model_input, np.ndarray):  # the scoring server's {"inputs": ...}: 0-d for a scalar
        if model_input.ndim > 1:
            raise RequestRefused(f"send a list of videos, not a {model_input.ndim}-dimensional array")
        items = [_kind(v) for v in model_input.reshape(-1).tolist()]
    else:
        items = [_kind(v) for v in model_input]
    if not items:
        raise RequestRefused("no videos given: send at least one video")
    if len(items) > MAX_ITEMS:
        raise RequestRefused(f"{len(items)} videos in one request; at most {MAX_ITEMS}: split the request")
    total = sum(_sent_bytes(kind, value) for kind, value in items)
    if total > MAX_REQUEST_MB * 2**20:
        raise RequestRefused(
            f"{total / 2**20:.0f} MB of video in one request; at most {MAX_REQUEST_MB} MB: split the request"
        )
    return items


def _sent_bytes(kind: str, value) -> int:
    """What an item weighs once decoded (base64 carries 3 bytes in 4 characters); a path weighs nothing."""
    if kind == "bytes":
        return len(value)
    return len(value) * 3 // 4 if kind == "b64" and isinstance(value, str) else 0


def _kind(value) -> tuple[str, object]:
    return ("bytes", value) if isinstance(value, (bytes, bytearray)) else ("path", value)


def caption_batch(captioner, items: list[tuple[str, object]], root: Path | None) -> pd.DataFrame:
    """One row per item: the caption, or (caption "") the reason it was not captioned."""
    from kocap.data.video import VideoError

    captions, errors, good, frames = [""] * len(items), [""] * len(items), [], []
    with tempfile.TemporaryDirectory(prefix="kocap-serve-") as tmp:
        for i, (kind, value) in enumerate(items):  # each on its own: one bad item fails only itself
            try:
                path = _local_file(kind, value, root, Path(tmp) / f"{i}.video")
                frames.append(_checked_frames(captioner, path))
                good.append(i)
            except (VideoError, ValueError, OSError) as exc:
                errors[i] = _message(exc)
    if good:  # then caption the good ones together, in batches
        for i, caption in zip(good, captioner.caption_frames(np.stack(frames))):
            captions[i] = caption
    shown = [v if kind == "path" else f"<{kind} item {i}>" for i, (kind, v) in enumerate(items)]
    return pd.DataFrame({"video": [str(s)[:200] for s in shown], "caption": captions, "error": errors})


def _local_file(kind: str, value, root: Path | None, tmp: Path) -> Path:
    if kind == "path":
        return _allowed_path(str(value), root)
    data = value if kind == "bytes" else _b64(value)
    if len(data) > MAX_VIDEO_MB * 2**20:
        raise ValueError(f"video is {len(data) / 2**20:.0f} MB; at most {MAX_VIDEO_MB} MB per video")
    tmp.write_bytes(data)
    return tmp


def _b64(text) -> bytes:
    if not isinstance(text, str) or len(text) > (MAX_VIDEO_MB * 2**20 * 4) // 3 + 4:
        raise ValueError(f"video_b64 must be base64 text of at most {MAX_VIDEO_MB} MB of video")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("video_b64 is not valid base64") from None


def _allowed_path(text: str, root: Path | None) -> Path:
    """Inside the allowed root, or refused with one message whether or not the file exists."""
    if root is None:
        raise ValueError(
            f"video paths are not read by this server: send the video bytes as video_b64 (base64), or "
            f"start the server with {ROOT_ENV}=DIR to allow files inside DIR"
        )
    if len(text) > MAX_PATH or "\0" in text:
        raise ValueError(f"video_path is not a usable path (at most {MAX_PATH} characters)")
    path = Path(os.path.realpath(text if os.path.isabs(text) else root / text))
    if not path.is_relative_to(root):
        raise ValueError(f"video_path is outside the folder this server reads ({ROOT_ENV})")
    if not path.is_file():
        raise ValueError("no video file at this path inside the served folder")
    return path


def _checked_frames(captioner, path: Path) -> np.ndarray:
    """Training's media limits first (header only), then the same frames as training."""
    from kocap.data.video import check_limits, probe

    limits = captioner.cfg.validate_
    check_limits(probe(path, limits.max_pixels), limits)
    return captioner.frames(path)


def _message(exc: Exception) -> str:
    """The reason for a user, without any server path: a decoder's message holds the file's absolute path
    (the served file's, or the temp file's; PyAV even cuts it short), so every absolute path is `<file>`."""
    text = _ABSOLUTE_PATH.sub("<file>", str(exc)).strip()
    return text or type(exc).__name__


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/[^\s'\"]*")


mlflow.models.set_model(KocapCaptioner())
