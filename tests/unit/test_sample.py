"""The embedded sample: deterministic, AI-Hub-shaped, and its captions follow from the pixels."""

import io
import json
import zipfile

import av
import numpy as np
import pytest

from kocap.aihub.archive import member_name
from kocap.config import SampleParams
from kocap.evaluate.metrics import sentences
from kocap.sample.build import build_aihub_sample
from kocap.sample.captions import describe, josa
from kocap.sample.facts import read_facts
from kocap.sample.scene import draw_scene


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic_and_grows_by_new_zips(tmp_path):
    small = SampleParams(num_clips=16, clips_per_zip=8)
    build_aihub_sample(tmp_path / "a", small)
    build_aihub_sample(tmp_path / "b", small)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b
    build_aihub_sample(tmp_path / "c", SampleParams(num_clips=24, clips_per_zip=8))
    c = _files(tmp_path / "c")
    assert {k: c[k] for k in a} == a  # earlier zips byte-identical
    new = sorted(set(c) - set(a))
    assert new and all("_03." in k for k in new)


def test_layout_follows_aihub(sample_server_root):
    names = sorted(p.relative_to(sample_server_root).as_posix() for p in sample_server_root.rglob("*.zip"))
    assert names[0].startswith(
        "71849/123.대한민국 배경영상 상세 설명문 데이터/01-1.정식개방데이터/Training/01.원천데이터/TS_01"
    )
    assert {n.split("/")[-1][:3] for n in names} == {"TS_", "TL_", "VS_", "VL_"}


@pytest.mark.parametrize(
    "word, particle", [("공", "공이"), ("자동차", "자동차가"), ("사람", "사람이"), ("도시", "도시가")]
)
def test_particles_follow_the_final_consonant(word, particle):
    assert josa(word, "이", "가") == particle


def _clips(root):
    """(frames, attributes, caption) of every clip, read back from the zips like a user would."""
    labels, videos = {}, {}
    for z in root.rglob("*.zip"):
        with zipfile.ZipFile(z) as zf:
            for info in zf.infolist():
                name = member_name(info.filename, info.flag_bits)
                data = zf.read(info)
                if name.endswith(".json"):
                    text = data.decode("utf-8-sig") if not _is_cp949(data) else data.decode("cp949")
                    labels[name[:-5]] = json.loads(text)["annotation"]
                else:
                    videos[name[:-4]] = data
    out = []
    for stem in sorted(labels):
        with av.open(io.BytesIO(videos[stem])) as c:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)
        ann = labels[stem]
        out.append((frames, ann["attributes"], ann.get("description_kr") or ann.get("description_ko")))
    return out


def _is_cp949(data: bytes) -> bool:
    try:
        data.decode("utf-8-sig")
        return False
    except UnicodeDecodeError:
        return True


def _nearest_centroid(features, labels):
    """Fit on the first half, score on the second; also the majority-class score (text-only prior)."""
    y, n = np.array(labels), len(labels) // 2
    classes = sorted(set(y[:n]))
    centroids = {c: features[:n][y[:n] == c].mean(0) for c in classes}
    pred = np.array([min(classes, key=lambda c: np.linalg.norm(f - centroids[c])) for f in features[n:]])
    majority = max(classes, key=lambda c: (y[:n] == c).sum())
    return (pred == y[n:]).mean(), (y[n:] == majority).mean()


def test_captions_say_what_is_drawn_and_the_video_reveals_it(tmp_path):
    root = build_aihub_sample(tmp_path, SampleParams(num_clips=80, clips_per_zip=40))
    clips = _clips(root)
    for _, attrs, caption in clips:  # every drawn fact is stated, and read back by attribute accuracy
        assert read_facts(caption) == attrs
    frames = np.stack([f for f, _, _ in clips])  # N, T, H, W, 3
    sky = frames[:, :, :10].mean(axis=(1, 2, 3))  # the top rows: sky colour
    moving = np.abs(frames - np.median(frames, axis=1, keepdims=True)).sum(-1)  # what changes over time
    moving = np.where(moving > 60, moving, 0).sum(2)  # N, T, W; codec noise dropped
    x = (moving * np.arange(moving.shape[-1])).sum(-1) / (moving.sum(-1) + 1e-6)
    slope = np.polyfit(np.arange(x.shape[1]), x.T, 1)[0][:, None]  # where it moves, per frame
    time_acc, time_prior = _nearest_centroid(sky, [a["time"] for _, a, _ in clips])
    motion_acc, motion_prior = _nearest_centroid(slope, [a["motion"] for _, a, _ in clips])
    assert time_acc >= 0.95 and time_acc - time_prior >= 0.4
    assert motion_acc >= 0.7 and motion_acc - motion_prior >= 0.3


def test_descriptions_have_the_length_and_shape_of_71849s():
    """Paragraphs like AI-Hub 71849's (mean ~575 characters, roughly 350-900, 5-10 sentences), varied in wording."""
    drawn = []
    for i in range(300):
        rng = np.random.default_rng([7, i])
        scene = draw_scene(rng)
        drawn.append((scene, describe(scene, rng)))
    lengths = np.array([len(c) for _, c in drawn])
    assert 520 <= lengths.mean() <= 630 and lengths.min() >= 350 and lengths.max() <= 900
    assert all(5 <= len(sentences(c)) <= 10 for _, c in drawn)
    scene = drawn[0][0]
    wordings = {describe(scene, np.random.default_rng(k)) for k in range(40)}
    assert len(wordings) >= 20  # one scene, many paragraphs: memorising a template does not win
