"""The ingest stage end to end against the loopback emulator: manifest, rejects, incremental runs,
hostile archives, 71495 spans, and the key never leaving the process."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from kocap import paths
from kocap.aihub.emulator import Emulator
from kocap.aihub.errors import IncompleteDownloadError, NotApprovedError
from kocap.config import SampleParams, load_config
from kocap.data import ingest
from kocap.env import RunEnv
from kocap.sample.build import TOP, VERSION, build_aihub_sample

from ..conftest import SMALL

KEY = "ingest-key-Zq81xT"


def _cfg(*overrides):
    base = [f"data.sample.{k}={v}" for k, v in SMALL.items()]
    return load_config(Path("/nonexistent"), ["data.source=aihub", "data.aihub.timeout_s=20", *base, *overrides])


def _env(emu):
    return RunEnv({"AIHUB_APIKEY": KEY, "AIHUB_BASE_URL": emu.url})


def _add_zip(server: Path, split: str, folder: str, name: str, members: dict[str, bytes]) -> None:
    path = server / "71849" / TOP / VERSION / split / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)


@pytest.fixture
def server(tmp_path, sample_server_root):
    root = tmp_path / "server"
    shutil.copytree(sample_server_root, root)
    return root


def test_ingest_builds_the_manifest_and_quarantines_bad_labels(tmp_path, server):
    video = next((server / "71849").rglob("TS_01*.zip"))
    with zipfile.ZipFile(video) as zf:
        mp4 = zf.read(zf.infolist()[0])
    good = {"annotation": {"description_kr": "새로 추가된 영상의 설명입니다. 맑은 날의 해변입니다."}}
    _add_zip(server, "Training", "01.원천데이터", "TS_99.추가.zip", {f"extra_{i}.mp4": mp4 for i in range(5)})
    _add_zip(
        server,
        "Training",
        "02.라벨링데이터",
        "TL_99.추가.zip",
        {
            "extra_0.json": json.dumps(good, ensure_ascii=False).encode("cp949"),
            "extra_1.json": b'{"annotation": {"description_kr": "cut',
            "extra_2.json": json.dumps({"annotation": {"summary": "x"}}).encode(),
            "extra_3.json": b"\xff\xfe\x00garbage\x81",
            "no_video.json": json.dumps(good, ensure_ascii=False).encode("utf-8-sig"),
        },
    )
    project = tmp_path / "project"
    with Emulator(server, {KEY}, part_size=2048) as emu:
        report = ingest.run(_cfg(), project, _env(emu))
    manifest = pd.read_parquet(project / paths.MANIFEST)
    rejects = pd.read_parquet(project / paths.INGEST_REJECTS).set_index("sample_id")["reason"].to_dict()
    assert list(manifest.columns) == ingest.MANIFEST_COLUMNS
    assert len(manifest) == SMALL["num_clips"] + 1 and manifest["sample_id"].is_unique
    assert set(manifest["split"]) == {"train", "val"}
    assert manifest.set_index("sample_id").loc["extra_0", "caption_ko"].startswith("새로 추가된")
    assert rejects["extra_1"].startswith("bad json") and rejects["extra_2"].startswith("missing caption")
    assert rejects["extra_3"].startswith(("encoding", "bad json")) and rejects["no_video"].startswith("video missing")
    assert all((project / p).is_file() for p in manifest["video_path"])
    assert manifest["source_md5"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert report["rejected"] == 4 and report["samples"] == manifest["split"].value_counts().to_dict()
    assert (project / paths.INGEST_REJECTS).exists() and (project / paths.IMAGE_MANIFEST).exists()


def test_rerun_downloads_only_new_files_and_touches_nothing_landed(tmp_path):
    server, project = tmp_path / "server", tmp_path / "project"
    build_aihub_sample(server, SampleParams(**{**SMALL, "num_clips": 16}))
    with Emulator(server, {KEY}, part_size=2048) as emu:
        ingest.run(_cfg(), project, _env(emu))
        first = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (project / "data/raw").rglob("*.mp4")}
        n_first = len(pd.read_parquet(project / paths.MANIFEST))
        ingest.run(_cfg(), project, _env(emu))  # nothing new upstream
        assert len(emu.downloads) == 1
        build_aihub_sample(server, SampleParams(**{**SMALL, "num_clips": 24}))  # AI-Hub adds data
        report = ingest.run(_cfg(), project, _env(emu))
    new_zips = [f for f in emu.files("71849") if f.filekey in emu.downloads[1]]
    assert new_zips and all("_02." in f.name or "_03." in f.name for f in new_zips)
    assert sorted(report["downloaded"]) == sorted(emu.downloads[1])
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first} == first
    assert len(pd.read_parquet(project / paths.MANIFEST)) == 24 > n_first
    snapshot = json.loads(next((project / "data/raw").glob("aihub-71849/tree_snapshot.json")).read_text())
    assert len(snapshot["files"]) == len(emu.files("71849"))


def test_a_hostile_archive_is_quarantined_and_the_rest_lands(tmp_path, server):
    _add_zip(server, "Training", "01.원천데이터", "TS_66.evil.zip", {"../../../escaped.mp4": b"evil", "ok.mp4": b"x"})
    project = tmp_path / "project"
    with Emulator(server, {KEY}, part_size=2048) as emu:
        evil = next(f.filekey for f in emu.files("71849") if "evil" in f.path)
        report = ingest.run(_cfg(), project, _env(emu))  # one bad archive never blocks the line
        with pytest.raises(IncompleteDownloadError, match="outside the target folder"):
            ingest.run(_cfg("data.aihub.max_failed_frac=0"), tmp_path / "strict", _env(emu))  # above the gate: stop
        _, pending = ingest.pending(_cfg(), project, _env(emu))
    assert list(report["failed"]) == [evil] and "outside the target folder" in report["failed"][evil]
    assert report["missing"] == [evil] and 0 < report["lost_share"] < 0.25  # one small archive, by the tree's sizes
    assert not list(tmp_path.rglob("escaped.mp4"))
    assert len(pd.read_parquet(project / paths.MANIFEST)) == SMALL["num_clips"]
    rejects = pd.read_parquet(project / paths.INGEST_REJECTS)
    row = rejects[rejects["sample_id"] == f"filekey-{evil}"].iloc[0]
    assert "TS_66.evil.zip" in row["label_path"] and "outside the target folder" in row["reason"]
    snapshot = json.loads((project / "data/raw/aihub-71849/tree_snapshot.json").read_text())
    assert not any("evil" in f["path"] for f in snapshot["files"])  # not marked done ...
    assert pending == [evil]  # ... so the next run (watch-aihub) fetches only that one again


def test_71495_spans_become_samples_and_bad_spans_are_rejected(tmp_path, sample_server_root):
    server = tmp_path / "server"
    video = next((sample_server_root / "71849").rglob("TS_01*.zip"))
    with zipfile.ZipFile(video) as zf:
        mp4 = zf.read(zf.infolist()[0])
    base = server / "71495" / "204.비디오 장면 설명문 생성 데이터" / "01.데이터"
    label = {
        "duration": 60,
        "sentences": [
            {"timestamps": ["00:01.00000", "00:09.50000"], "sentences_ko": "남자가 길을 걷는다."},
            {"timestamps": ["00:30.00000", "00:20.00000"], "sentences_ko": "거꾸로"},
            {"timestamps": ["0:40.00000", "0:55.00000"], "sentences_ko": "자동차가 지나간다."},
        ],
    }
    for split, prefix in (("1.Training", "T"), ("2.Validation", "V")):
        (base / split).mkdir(parents=True)
        with zipfile.ZipFile(base / split / f"{prefix}S.zip", "w") as zf:
            zf.writestr(f"{prefix}_clip.mp4", mp4)
        with zipfile.ZipFile(base / split / f"{prefix}L.zip", "w") as zf:
            zf.writestr(f"{prefix}_clip.json", json.dumps(label, ensure_ascii=False).encode("utf-8-sig"))
    project = tmp_path / "project"
    with Emulator(server, {KEY}, part_size=2048) as emu:
        ingest.run(_cfg("data.aihub.dataset_key=71495"), project, _env(emu))
    m = pd.read_parquet(project / paths.MANIFEST).set_index("sample_id")
    assert sorted(m.index) == ["T_clip_000", "T_clip_002", "V_clip_000", "V_clip_002"]
    assert (m.loc["T_clip_002", "start_s"], m.loc["T_clip_002", "end_s"]) == (40.0, 55.0)
    assert m.loc["V_clip_000", "split"] == "val" and m.loc["V_clip_000", "clip_id"] == "V_clip"
    rejects = pd.read_parquet(project / paths.INGEST_REJECTS)
    assert len(rejects) == 2 and rejects["reason"].str.contains("inverted").all()


def test_the_key_never_appears_in_logs_errors_or_files(tmp_path, server, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    project = tmp_path / "project"
    with Emulator(server, {KEY}, part_size=2048) as emu:
        emu.faults.cut_short[emu.files("71849")[0].filekey] = 1  # a retry path gets logged too
        ingest.run(_cfg(), project, _env(emu))
        emu.faults.not_approved.add("71849")
        with pytest.raises(NotApprovedError) as refused:
            ingest.run(_cfg("data.aihub.filekeys=" + emu.files("71849")[0].filekey), tmp_path / "p2", _env(emu))
        cli = subprocess.run(
            [sys.executable, "-m", "kocap.cli", "aihub", "download", "71849", "--out", str(tmp_path / "cli")],
            env={"AIHUB_APIKEY": KEY, "AIHUB_BASE_URL": emu.url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    out, err = capfd.readouterr()
    texts = [caplog.text, out, err, str(refused.value), repr(refused.value), cli.stdout, cli.stderr]
    assert cli.returncode == 2 and "not approved" in cli.stderr
    assert all(KEY not in t for t in texts)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert KEY.encode() not in path.read_bytes(), path


def test_the_download_command_extracts_every_good_archive_and_names_the_refused_one(tmp_path, server):
    _add_zip(server, "Training", "01.원천데이터", "TS_00.evil.zip", {"../../../escaped.mp4": b"evil"})
    out = tmp_path / "out"
    with Emulator(server, {KEY}, part_size=2048) as emu:
        zips = [f for f in emu.files("71849") if f.path.endswith(".zip")]
        evil = next(f.filekey for f in zips if "evil" in f.path)
        cli = subprocess.run(
            [sys.executable, "-m", "kocap.cli", "aihub", "download", "71849", "--out", str(out)],
            env={
                "AIHUB_APIKEY": KEY,
                "AIHUB_BASE_URL": emu.url,
                "PATH": "/usr/bin:/bin",
                "PREFECT_HOME": str(tmp_path / ".prefect"),
            },
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert cli.returncode == 2 and evil in cli.stderr and "outside the target folder" in cli.stderr
    assert "Traceback" not in cli.stderr
    extracted = [p for p in out.rglob("*") if p.is_dir() and p.name.endswith(tuple(z.name[:-4] for z in zips))]
    assert len(cli.stdout.splitlines()) == len(zips) - 1 and len(extracted) == len(zips) - 1  # evil sorts first
    assert not list(tmp_path.rglob("escaped.mp4"))


def _split_zip(server: Path, name: str, members: dict[str, bytes], tmp: Path) -> list[str]:
    """A multi-volume archive made by Info-ZIP (`zip -s 64k`), its volumes placed as AI-Hub lists them."""
    src = tmp / "split-src"
    for member, data in members.items():
        (src / member).parent.mkdir(parents=True, exist_ok=True)
        (src / member).write_bytes(data)
    subprocess.run(["zip", "-q", "-r", "-s", "64k", str(tmp / f"{name}.zip"), "."], cwd=src, check=True)
    folder = server / "71849" / TOP / VERSION / "Training" / "01.원천데이터"
    volumes = sorted(p.name for p in tmp.glob(f"{name}.z*"))
    for volume in volumes:
        shutil.move(str(tmp / volume), folder / volume)
    return volumes


@pytest.mark.skipif(
    shutil.which("zip") is None, reason="needs Info-ZIP `zip` to make a split archive (apt-get install zip)"
)
def test_a_multi_volume_zip_lands_whole_and_a_missing_volume_is_named(tmp_path, server):
    import os

    members = {"extra/a.mp4": os.urandom(150_000), "extra/b.mp4": os.urandom(90_000)}
    volumes = _split_zip(server, "TS_77", members, tmp_path)
    assert volumes[-1] == "TS_77.zip" and len(volumes) >= 4  # .z01, .z02, .z03 ... + .zip
    with Emulator(server, {KEY}, part_size=2048) as emu:
        keys = {f.name: f.filekey for f in emu.files("71849") if f.name.startswith("TS_77.")}
        report = ingest.run(_cfg(), tmp_path / "project", _env(emu))
    assert len(keys) == len(volumes) and not report["failed"]  # each volume its own filekey
    extracted = tmp_path / "project/data/raw/aihub-71849/extracted"
    for member, data in members.items():
        (found,) = list(extracted.rglob(Path(member).name))
        assert found.read_bytes() == data and "TS_77" in str(found)

    (server / "71849" / TOP / VERSION / "Training" / "01.원천데이터" / "TS_77.z02").unlink()
    with Emulator(server, {KEY}, part_size=2048) as emu:
        report = ingest.run(_cfg(), tmp_path / "second", _env(emu))
    (why,) = report["failed"].values()
    assert "missing volume(s) TS_77.z02" in why and list(report["failed"]) == [keys["TS_77.zip"]]
