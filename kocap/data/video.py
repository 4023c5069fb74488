"""Reading video: the one frame-index function, probing, and decoding with decord (PyAV fallback).

    idx = sample_indices(n_frames, 8)            # linspace(0, n-1, k) rounded; used everywhere
    frames, idx = read_clip(path, 8)             # (k, H, W, 3) uint8 RGB, decord first, PyAV fallback
    frames, idx = load_clip(path, FrameSpec.from_config(cfg))   # model-ready (k, S, S, 3) uint8

`load_clip` is the single path from a video file to model-ready uint8 frames: the frames stage,
evaluation, `kocap caption` and the MLflow model all call it.

Bad files raise VideoError with a reason a user can act on; nothing here crashes on bad input.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..model.preprocess import resize_crop

if TYPE_CHECKING:  # the decoding helper starts without pydantic (kocap.data.decoder)
    from ..config import Config


class VideoError(ValueError):
    """A video that cannot be used; the message is the quarantine reason."""


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    fps: float
    width: int
    height: int
    duration_s: float


def check_limits(info: VideoInfo, limits) -> None:
    """The media limits training applies (validate params: fps range, duration), for one probed video;
    the validation gate checks the same numbers on the manifest with Great Expectations."""
    if not limits.min_fps <= info.fps <= limits.max_fps:
        raise VideoError(f"{info.fps:.1f} fps outside {limits.min_fps}-{limits.max_fps}")
    if not 0.05 <= info.duration_s <= limits.max_duration_s:
        raise VideoError(f"duration {info.duration_s:.1f} s outside 0.05-{limits.max_duration_s} s")


def sample_indices(n_frames: int, k: int, short_clip: str = "pad") -> list[int]:
    """k uniform frame indices: `linspace(0, n-1, k)` rounded (LLaVA-NeXT, LLaMA-Factory, ms-swift).

    A clip with fewer than k frames is padded by repeating its last frame (`pad`) or refused
    (`reject`); k never changes silently.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    if n_frames < 1:
        raise VideoError("no frames")
    if n_frames < k and short_clip == "reject":
        raise VideoError(f"too short: {n_frames} frames, {k} needed")
    if k == 1:
        return [0]
    idx = np.round(np.linspace(0, n_frames - 1, k)).astype(int).tolist()
    if n_frames < k:  # linspace repeats indices already; keep the order and end on the last frame
        idx = sorted(min(i, n_frames - 1) for i in idx)
    return idx


def probe(path: Path, max_pixels: int) -> VideoInfo:
    """Header facts from PyAV without decoding; refuses what should never reach a decoder."""
    import av

    path = Path(path)
    if not path.exists():
        raise VideoError("file missing")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["nothing"]
                raise VideoError(f"no video stream (has {', '.join(kinds)})")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            duration = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / 1e6
            n = stream.frames or int(round(duration * fps))
    except VideoError:
        raise
    except Exception as exc:  # av raises many types for garbage input
        raise VideoError(f"not a readable video ({type(exc).__name__}: {str(exc)[:120]})") from None
    if width * height > max_pixels:
        raise VideoError(f"resolution {width}x{height} above the limit of {max_pixels} pixels")
    if width < 1 or height < 1:
        raise VideoError("no picture size in the header")
    return VideoInfo(n, fps, width, height, duration)


def span_indices(n_frames: int, fps: float, span: tuple[float, float] | None, k: int, short_clip: str) -> list[int]:
    """`sample_indices` over the frames inside `span` (start_s, end_s): a 71495 sentence is seen with
    the frames of its own time span, not the whole video's. No span: the whole clip."""
    if span is None:
        return sample_indices(n_frames, k, short_clip)
    start_s, end_s = span
    if not (np.isfinite(fps) and fps > 0):  # a header without a frame rate: seconds cannot become frames
        raise VideoError(f"span {start_s:g}-{end_s:g} s cannot be located: the video's frame rate is unknown")
    first, stop = max(0, int(np.floor(start_s * fps))), min(n_frames, int(np.ceil(end_s * fps)))
    if stop <= first:
        raise VideoError(f"span {start_s:g}-{end_s:g} s holds no frames (the video has {n_frames} at {fps:g} fps)")
    return [first + i for i in sample_indices(stop - first, k, short_clip)]


def read_clip(
    path: Path, k: int, short_clip: str = "pad", span: tuple[float, float] | None = None, fps: float = 0.0
) -> tuple[np.ndarray, list[int]]:
    """The k uniformly sampled frames of a clip (or of its `span` in seconds, at `fps`), (k, H, W, 3)
    uint8 RGB, and their indices."""
    try:
        import decord

        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception:  # decord cannot open every container; PyAV reads more
        n = _pyav_count(path)
        idx = span_indices(n, fps, span, k, short_clip)
        return _read_pyav(path, idx), idx
    idx = span_indices(len(reader), fps or reader.get_avg_fps(), span, k, short_clip)
    try:
        return reader.get_batch(idx).asnumpy(), idx
    except Exception as exc:
        raise VideoError(f"decoding failed ({type(exc).__name__}: {str(exc)[:120]})") from None


def read_frames(path: Path, indices: list[int], backend: str = "auto") -> np.ndarray:
    """Frames at `indices` as (k, H, W, 3) uint8 RGB: decord first, PyAV when decord cannot open it.

    Both backends return identical pixels (tested); PyAV decodes sequentially up to the last index.
    """
    if backend in ("auto", "decord"):
        try:
            return _read_decord(path, indices)
        except VideoError:
            raise
        except Exception:
            if backend == "decord":
                raise
    return _read_pyav(path, indices)


def _read_decord(path: Path, indices: list[int]) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    n = len(reader)
    if max(indices) >= n:
        raise VideoError(f"frame {max(indices)} requested but the video has {n}")
    try:
        return reader.get_batch(list(indices)).asnumpy()
    except Exception as exc:
        raise VideoError(f"decoding failed ({type(exc).__name__}: {str(exc)[:120]})") from None


def _read_pyav(path: Path, indices: list[int]) -> np.ndarray:
    import av

    wanted, last = set(indices), max(indices)
    got: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:  # convert only the frames we keep
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except Exception as exc:
        raise VideoError(f"decoding failed ({type(exc).__name__}: {str(exc)[:120]})") from None
    missing = sorted(wanted - set(got))
    if missing:
        raise VideoError(f"decoding stopped before frame {missing[0]} (truncated file?)")
    return np.stack([got[i] for i in indices])


def _pyav_count(path: Path) -> int:
    """Frames in the first video stream: from the header, else by counting packets (no decoding)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return stream.frames or sum(1 for p in container.demux(stream) if p.size)
    except Exception as exc:
        raise VideoError(f"not a readable video ({type(exc).__name__}: {str(exc)[:120]})") from None


def encode_mp4(frames, fps: int, codec: str = "mpeg4", options: dict | None = None) -> bytes:
    """Encode RGB uint8 frames (any iterable of (H, W, 3)) to mp4 bytes. With the default mpeg4 codec
    and one thread the bytes are identical on every run (libx264's were not, even with one thread)."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = None
        for t, f in enumerate(frames):
            if stream is None:
                stream = out.add_stream(codec, rate=fps, options={"threads": "1", **(options or {})})
                stream.width, stream.height, stream.pix_fmt = f.shape[1], f.shape[0], "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
            frame.pts = t
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode() if stream else []:
            out.mux(packet)
    return buf.getvalue()


@dataclass(frozen=True)
class FrameSpec:
    num_frames: int
    size: int
    short_clip: str
    max_pixels: int

    @classmethod
    def from_config(cls, cfg: Config) -> FrameSpec:
        return cls(cfg.frames.num_frames, cfg.model.chosen.image_size, cfg.frames.short_clip, cfg.validate_.max_pixels)


def load_clip(path: Path, spec: FrameSpec, span: tuple[float, float] | None = None) -> tuple[np.ndarray, list[int]]:
    """Video file (or its `span`, start and end in seconds) -> (k, S, S, 3) uint8 frames and the source
    indices. Raises VideoError."""
    info = probe(path, spec.max_pixels)  # refuse what should never reach a decoder
    frames, idx = read_clip(path, spec.num_frames, spec.short_clip, span, info.fps)
    return resize_crop(frames, spec.size), idx


def load_image(path: Path, spec: FrameSpec) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return resize_crop(np.asarray(im.convert("RGB")), spec.size)
