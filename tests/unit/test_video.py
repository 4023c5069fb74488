"""Frame sampling, decoding backends, and preprocessing identical to CLIPImageProcessor."""

import json

import numpy as np
import pytest

from kocap.data.video import VideoError, encode_mp4, read_clip, read_frames, sample_indices
from kocap.model.preprocess import normalize, resize_crop


@pytest.mark.parametrize(
    "n, k, expected",
    [
        (16, 8, [0, 2, 4, 6, 9, 11, 13, 15]),
        (100, 1, [0]),
        (8, 8, list(range(8))),
        (3, 8, [0, 0, 1, 1, 1, 1, 2, 2]),  # padded: still k indices, in order, ending on the last frame
        (1, 4, [0, 0, 0, 0]),
        (900, 8, [0, 128, 257, 385, 514, 642, 771, 899]),
    ],
)
def test_uniform_indices(n, k, expected):
    assert sample_indices(n, k) == expected
    assert sample_indices(n, k) == np.round(np.linspace(0, n - 1, k)).astype(int).tolist() or n < k


def test_short_clips_can_be_refused_instead():
    with pytest.raises(VideoError, match="too short: 3 frames, 8 needed"):
        sample_indices(3, 8, "reject")
    with pytest.raises(VideoError):
        sample_indices(0, 8)


# Even frame sizes (what yuv420p video has in practice). With an odd height the two libraries round
# chroma differently; read_clip then still picks the same backend for a file at training and inference.
@pytest.mark.parametrize("codec, size", [("mpeg4", (96, 96)), ("libx264", (360, 640)), ("mpeg4", (120, 202))])
def test_decord_and_pyav_return_identical_pixels(tmp_path, codec, size):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (30, *size, 3), dtype=np.uint8)
    frames[:, : size[0] // 2] = np.linspace(0, 255, 30, dtype=np.uint8)[:, None, None, None]
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(frames, 15, codec=codec))
    a, idx = read_clip(path, 8)
    b = read_frames(path, idx, backend="pyav")
    c = read_frames(path, idx, backend="decord")
    assert a.shape == (8, *size, 3) and idx == sample_indices(30, 8)
    assert np.array_equal(a, b) and np.array_equal(b, c)


@pytest.mark.parametrize(
    "h, w, size", [(360, 640, 336), (96, 96, 64), (150, 97, 64), (100, 300, 336), (720, 1280, 336)]
)
def test_preprocessing_equals_clip_image_processor(h, w, size):
    from transformers import CLIPImageProcessorPil  # the reference without torchvision

    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    expected = ref(images=img, return_tensors="np")["pixel_values"][0]
    ours = normalize(resize_crop(img, size))
    assert ours.shape == expected.shape == (3, size, size)
    assert np.abs(ours - expected).max() < 1e-6


def test_each_71495_span_is_sampled_inside_its_own_time_span(tmp_path):
    """71495 gives each sentence start_s/end_s in one video: the sentence about the red first second
    trains on red frames, the one about the blue second on blue frames, and a span past the end is a
    rejected sample with its reason (the rest of the shard goes on)."""
    import pandas as pd

    from kocap.data.frames import extract_shard, plan_shards
    from kocap.data.video import FrameSpec

    frames = np.zeros((16, 64, 64, 3), np.uint8)
    frames[:8, ..., 0], frames[8:, ..., 2] = 230, 230  # 8 fps: red in 0-1 s, blue in 1-2 s
    (tmp_path / "v.mp4").write_bytes(encode_mp4(frames, fps=8))
    table = pd.DataFrame(
        {
            "sample_id": ["red", "blue", "whole", "past"],
            "video_path": ["v.mp4"] * 4,
            "start_s": [0.0, 1.0, None, 5.0],
            "end_s": [1.0, 2.0, None, 6.0],
        }
    )
    spec = FrameSpec(num_frames=4, size=32, short_clip="pad", max_pixels=10**7)
    (shard,) = plan_shards(table, "video_path", "clips", spec, 8)
    extract_shard(shard, str(tmp_path), str(tmp_path), spec, "clips", timeout_s=60)
    meta = json.loads((tmp_path / f"{shard['key']}.json").read_text())
    data = np.load(tmp_path / f"{shard['key']}.npy")
    kept = {k["sample_id"]: (i, k["indices"]) for i, k in enumerate(meta["kept"])}
    assert kept["red"][1] == [0, 2, 5, 7] and kept["blue"][1] == [8, 10, 13, 15]
    assert kept["whole"][1] == [0, 5, 10, 15]
    red, blue = data[kept["red"][0]].astype(int), data[kept["blue"][0]].astype(int)
    assert (red[..., 0] > red[..., 2] + 100).all() and (blue[..., 2] > blue[..., 0] + 100).all()
    assert [r["sample_id"] for r in meta["rejects"]] == ["past"]
    assert "span 5-6 s holds no frames" in meta["rejects"][0]["reason"]
    untimed = plan_shards(table.drop(columns=["start_s", "end_s"]), "video_path", "clips", spec, 8)[0]
    assert untimed["key"] != shard["key"]  # the spans are part of what a shard's frames depend on


@pytest.mark.parametrize("fps", [0.0, float("nan")])
def test_a_span_in_a_video_without_a_frame_rate_says_so(fps):
    """A header with no frame rate cannot place a span in seconds: the reason names the rate, not an
    empty span (the clip is not empty)."""
    from kocap.data.video import span_indices

    with pytest.raises(VideoError, match="frame rate is unknown"):
        span_indices(16, fps, (0.0, 1.0), 4, "pad")
    assert span_indices(16, fps, None, 4, "pad") == [0, 5, 10, 15]  # the whole clip needs no rate


def test_a_clip_whose_decoder_never_returns_is_set_aside_and_the_shard_goes_on(tmp_path, monkeypatch):
    """decord and PyAV have no time limit: a decoder stuck on one file stalled its shard for ever. Each
    file now decodes in a helper with `frames.decode_timeout_s`; past it the helper is killed, the
    clip is a reject with its reason and a fresh helper takes the next clip."""
    import threading

    import pandas as pd

    from kocap.data.frames import extract_shard, plan_shards
    from kocap.data.video import FrameSpec

    for name in ("a", "stuck", "c"):
        (tmp_path / f"{name}.mp4").write_bytes(encode_mp4(np.full((8, 32, 32, 3), 90, np.uint8), fps=8))
    table = pd.DataFrame({"sample_id": ["a", "stuck", "c"], "video_path": ["a.mp4", "stuck.mp4", "c.mp4"]})
    spec = FrameSpec(num_frames=4, size=16, short_clip="pad", max_pixels=10**7)
    (shard,) = plan_shards(table, "video_path", "clips", spec, 8)
    monkeypatch.setenv("KOCAP_FAULT", "frames.decode:stuck.mp4")  # that decode call never returns
    worker = threading.Thread(target=extract_shard, args=(shard, str(tmp_path), str(tmp_path), spec, "clips", 2))
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the shard is still waiting on the stuck decoder"
    meta = json.loads((tmp_path / f"{shard['key']}.json").read_text())
    assert [k["sample_id"] for k in meta["kept"]] == ["a", "c"]
    assert meta["rejects"] == [{"sample_id": "stuck", "reason": meta["rejects"][0]["reason"]}]
    assert "decoding took longer than 2 s" in meta["rejects"][0]["reason"]
    assert np.load(tmp_path / f"{shard['key']}.npy").shape == (2, 4, 16, 16, 3)
