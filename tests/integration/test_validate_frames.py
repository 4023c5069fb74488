"""validate and frames on real files: every quarantine reason, the split-leak check, the gate,
resume after a killed run, and the same frame path at inference."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from kocap import paths
from kocap.config import load_config
from kocap.data import frames, ingest, validate
from kocap.data.rows import open_frames
from kocap.data.video import FrameSpec, encode_mp4, load_clip, sample_indices
from kocap.env import RunEnv
from kocap.io import write_parquet

from ..conftest import SMALL


def _cfg(*overrides):
    small = [f"data.sample.{k}={v}" for k, v in SMALL.items()]
    return load_config(Path("/nonexistent"), [*small, "frames.shard_size=4", "frames.workers=2", *overrides])


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingested")
    ingest.run(_cfg(), root, RunEnv({}))
    return root


@pytest.fixture
def project(tmp_path, ingested):
    root = tmp_path / "p"
    shutil.copytree(ingested, root)
    return root


def _audio_only() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000)
        for i in range(20):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for p in s.encode(fr):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return buf.getvalue()


BAD_VIDEOS = {
    "zero_byte": (lambda good: b"", "empty file"),
    "truncated": (lambda good: good[: len(good) // 2], "not a readable video"),
    "audio_only": (lambda good: _audio_only(), "no video stream (has audio)"),
    "text_as_mp4": (lambda good: "이것은 동영상이 아닙니다\n".encode(), "not a readable video"),
    "enormous": (
        lambda good: encode_mp4(np.zeros((2, 2304, 4096, 3), np.uint8), 8),
        "resolution 4096x2304 above the limit",
    ),
    "too_short": (lambda good: encode_mp4(np.zeros((3, 64, 64, 3), np.uint8), 8), None),
}
CAPTION = "맑은 날 도시의 모습을 담은 영상입니다. 건물이 보입니다."


def _add_bad_rows(root: Path) -> pd.DataFrame:
    manifest = pd.read_parquet(root / paths.MANIFEST)
    good = (root / manifest.loc[0, "video_path"]).read_bytes()
    rows = []
    for name, (make, _) in BAD_VIDEOS.items():
        path = root / "data/raw/bad" / f"{name}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make(good))
        rows.append(
            {
                **manifest.iloc[0].to_dict(),
                "sample_id": name,
                "clip_id": name,
                "split": "train",
                "video_path": path.relative_to(root).as_posix(),
                "caption_ko": CAPTION,
            }
        )
    base = manifest.iloc[1].to_dict()
    rows += [
        {
            **base,
            "sample_id": "english",
            "clip_id": "english",
            "caption_ko": "A sunny day in a city with tall buildings.",
        },
        {**base, "sample_id": "empty_caption", "clip_id": "empty_caption", "caption_ko": ""},
        {**base, "sample_id": "long_caption", "clip_id": "long_caption", "caption_ko": "가" * 5000},
        {**manifest.iloc[2].to_dict(), "split": "val"},  # duplicate id, and its clip leaks
        {**base, "sample_id": "leak_val", "split": "val"},  # same clip as a train row
    ]
    out = pd.concat([manifest, pd.DataFrame(rows)], ignore_index=True)
    write_parquet(out, root / paths.MANIFEST)
    return out


def test_every_quarantine_reason_is_listed_and_the_rest_flows_on(project):
    table = _add_bad_rows(project)
    summary = validate.run(_cfg("validate.max_reject_frac=0.9"), project)
    rejects = pd.read_parquet(project / paths.VALIDATE_REJECTS)
    by_id = rejects.groupby("sample_id")["check"].apply(set).to_dict()
    details = rejects.groupby("sample_id")["detail"].apply(" | ".join).to_dict()
    for name, (_, reason) in BAD_VIDEOS.items():
        if reason:
            assert "video does not decode" in by_id[name] and reason in details[name], name
    assert "too few frames" not in by_id.get("too_short", set())  # pad policy: allowed
    assert by_id["english"] == {"too little Hangul"}
    assert by_id["empty_caption"] >= {"caption length out of bounds", "too little Hangul"}
    assert by_id["long_caption"] == {"caption length out of bounds"}
    dup = table.iloc[2]["sample_id"]
    assert "duplicate sample_id" in by_id[dup] and "clip in both train and val" in by_id[dup]
    assert by_id["leak_val"] == {"clip in both train and val"}
    kept = pd.read_parquet(project / paths.VALID_CLIPS)
    assert len(kept) == SMALL["num_clips"] + 1 and kept["sample_id"].is_unique  # + the padded short clip
    assert not set(kept[kept.split == "val"].clip_id) & set(kept[kept.split == "train"].clip_id)
    assert summary["by_reason"]["video does not decode"] == 5 and summary["clips_kept"] == len(kept)
    assert (project / paths.VALIDATE_DOCS / "gx/uncommitted/data_docs/local_site/index.html").exists()
    assert all((project / "data/raw/bad" / f"{n}.mp4").exists() for n in BAD_VIDEOS)  # never deleted


def test_short_clips_rejected_by_frames_when_the_policy_says_so(project):
    """Validation passes any decodable clip; the sampling policy (pad or reject) is the frames stage's."""
    table = _add_bad_rows(project)
    validate.run(_cfg("validate.max_reject_frac=0.9", "frames.short_clip=reject"), project)
    assert "too_short" in set(pd.read_parquet(project / paths.VALID_CLIPS)["sample_id"])
    spec = FrameSpec.from_config(_cfg("frames.short_clip=reject"))
    index, rejects = frames.extract(table, "video_path", "clips", project, spec, shard_size=5, workers=1)
    assert "too_short" not in set(index["sample_id"])
    assert "too short: 3 frames, 8 needed" in {r["sample_id"]: r["reason"] for r in rejects}["too_short"]


def test_the_gate_stops_too_many_rejects_and_empty_splits(project):
    _add_bad_rows(project)
    with pytest.raises(validate.ValidationGateError, match="failed validation .*max_reject_frac"):
        validate.run(_cfg("validate.max_reject_frac=0.05"), project)
    assert (project / paths.VALIDATE_REJECTS).exists()  # the evidence is written before failing
    manifest = pd.read_parquet(project / paths.MANIFEST)
    write_parquet(manifest[manifest.split == "train"], project / paths.MANIFEST)
    with pytest.raises(validate.ValidationGateError, match="split val is empty"):
        validate.run(_cfg(), project)


def test_frames_quarantines_bad_files_without_crashing(project):
    table = _add_bad_rows(project)
    spec = FrameSpec.from_config(_cfg())
    index, rejects = frames.extract(table, "video_path", "clips", project, spec, shard_size=5, workers=2)
    rejected = {r["sample_id"]: r["reason"] for r in rejects}
    for name, (_, reason) in BAD_VIDEOS.items():
        if reason:
            assert reason in rejected[name], name
    assert "too_short" in set(index["sample_id"])
    row = index.set_index("sample_id").loc["too_short"]
    assert list(row["indices"]) == [0, 0, 1, 1, 1, 1, 2, 2] and row["padded"]


def test_frames_stage_output_is_what_inference_reads(project):
    cfg = _cfg()
    validate.run(cfg, project)
    frames.run(cfg, project)
    index = pd.read_parquet(project / paths.FRAMES / "clips.parquet")
    clips = pd.read_parquet(project / paths.VALID_CLIPS).set_index("sample_id")
    spec = FrameSpec.from_config(cfg)
    for _, row in index.sample(5, random_state=0).iterrows():
        stored = open_frames(project, row)
        live, idx = load_clip(project / clips.loc[row["sample_id"], "video_path"], spec)
        assert stored.shape == (8, 64, 64, 3) and np.array_equal(stored, live)
        assert list(row["indices"]) == idx == sample_indices(16, 8)  # sample clips have 16 frames
    images = pd.read_parquet(project / paths.FRAMES / "images.parquet")
    assert len(images) == SMALL["num_images"] and open_frames(project, images.iloc[0]).shape == (64, 64, 3)


def test_the_inference_path_goes_through_the_one_index_function(project, monkeypatch):
    import kocap.data.video as video

    calls = []
    real = video.sample_indices
    monkeypatch.setattr(video, "sample_indices", lambda n, k, p="pad": calls.append((n, k)) or real(n, k, p))
    path = project / pd.read_parquet(project / paths.MANIFEST).loc[0, "video_path"]
    load_clip(path, FrameSpec(5, 64, "pad", 10**8))
    assert calls == [(16, 5)]


@pytest.mark.slow
def test_frames_resume_after_kill(project):
    cfg_args = ["frames.shard_size=1", "frames.workers=1"]
    validate.run(_cfg(*cfg_args), project)
    script = (
        "import sys; from pathlib import Path; from kocap.data import frames;"
        f"from tests.integration.test_validate_frames import _cfg; frames.run(_cfg(*{cfg_args!r}), Path(sys.argv[1]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(project)], cwd=Path(__file__).parents[2])
    folder = project / paths.FRAMES / "clips"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(folder.glob("*.json"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    assert 3 <= len(done) < SMALL["num_clips"], "killed mid-run"
    report = frames.run(_cfg(*cfg_args), project)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json") if p.name in done} == done  # not redone
    assert report["clips"] == SMALL["num_clips"] and not list(folder.glob("*.tmp*"))
    index = pd.read_parquet(project / paths.FRAMES / "clips.parquet")
    fresh = project.parent / "fresh"
    shutil.copytree(project, fresh, ignore=shutil.ignore_patterns("frames"))
    frames.run(_cfg(*cfg_args), fresh)
    for (_, a), (_, b) in zip(index.iterrows(), pd.read_parquet(fresh / paths.FRAMES / "clips.parquet").iterrows()):
        assert a["sample_id"] == b["sample_id"]
        assert np.array_equal(open_frames(project, a), open_frames(fresh, b))


def _image_source(folder: Path) -> dict[str, tuple[str, str | None]]:
    """Image files of every kind the gate must handle: name -> (Korean caption, expected reject reason)."""
    from PIL import Image

    folder.mkdir(parents=True)
    Image.fromarray(np.full((96, 128, 3), 90, np.uint8)).save(folder / "good.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(folder / "tiny.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    Image.fromarray(np.full((64, 64, 3), 10, np.uint8)).save(folder / "english.png")
    Image.fromarray(np.zeros((2304, 4096, 3), np.uint8)).save(folder / "huge.png")  # above validate.max_pixels
    return {
        "huge.png": (CAPTION, "resolution above validate.max_pixels"),
        "good.png": (CAPTION, None),
        "tiny.png": (CAPTION, "width out of range"),
        "corrupt.jpg": (CAPTION, "video does not decode"),
        "english.png": ("A sunny city street.", "too little Hangul"),
        "missing.png": (CAPTION, "video does not decode"),
        "good_empty": ("", "caption missing"),
    }


def _check_gate(project: Path, expected: dict) -> None:
    validate.run(_cfg(), project)  # (the gate reads only the tables; the source params do not matter here)
    kept = pd.read_parquet(project / paths.VALID_IMAGES)
    rejects = pd.read_parquet(project / paths.VALIDATE_REJECTS).query("kind == 'image'")
    assert set(kept["caption_ko"]) == {CAPTION} and len(kept) == 2  # good.png, captioned twice
    assert all((project / p).is_file() and "data/raw/images-" in p for p in kept["image_path"])  # versioned in raw
    for name, (_, reason) in expected.items():
        if reason:
            rows = rejects[rejects["sample_id"].str.contains(Path(name).stem.removesuffix("_empty"))]
            assert len(rows) and any(reason in c for c in rows["check"]), (name, rows.to_dict("records"))


@pytest.mark.parametrize("layout", ["coco", "aihub_coco", "imagefolder"])
def test_each_stage1_image_source_goes_through_the_validation_gate(project, tmp_path, layout):
    import json

    source = tmp_path / "set"
    expected = _image_source(source / "images")
    files = [(n if n != "good_empty" else "good.png", c) for n, (c, _) in expected.items()] + [("good.png", CAPTION)]
    if layout == "coco":
        names = sorted({f for f, _ in files})
        doc = {
            "images": [{"id": i, "file_name": f"images/{n}"} for i, n in enumerate(names)],
            "annotations": [{"image_id": names.index(f), "caption": c} for f, c in files],
        }
        (source / "captions.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        overrides = ["data.images.source=coco", f"data.images.captions={source / 'captions.json'}"]
    elif layout == "aihub_coco":  # a list, several Korean captions per image
        by_file: dict[str, list[str]] = {}
        for f, c in files:
            by_file.setdefault(f, []).append(c)
        doc = [
            {"file_path": f"images/{f}", "captions": ["(English)"] * len(cs), "caption_ko": cs}
            for f, cs in by_file.items()
        ]
        (source / "MSCOCO_train_val_Korean.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        overrides = ["data.images.source=coco", f"data.images.captions={source / 'MSCOCO_train_val_Korean.json'}"]
    else:
        lines = [json.dumps({"file_name": f"images/{f}", "text": c}, ensure_ascii=False) for f, c in files]
        (source / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        overrides = [
            "data.images.source=imagefolder",
            f"data.images.captions={source}",
            "data.images.caption_field=text",
        ]
    n = ingest.ingest_images(_cfg(*overrides), project)
    assert n == len(files)
    _check_gate(project, expected)


def test_stage1_can_be_switched_off_and_says_so(tmp_path):
    from kocap.train import align

    report = align.run(_cfg("stage1.enabled=false"), tmp_path)
    assert report["skipped"] and not (tmp_path / "models/align/projector.safetensors").exists()
    assert (tmp_path / "reports/align_loss.png").exists()  # DVC's plot output exists either way
