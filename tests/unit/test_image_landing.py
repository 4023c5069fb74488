"""Stage-1 images land in raw/ whole or not at all, and two files never land on one name."""

from __future__ import annotations

import os
import shutil

import pytest

from kocap.data.images import land_images


def test_two_outside_files_with_one_name_land_apart(tmp_path):
    for sub, content in (("a", b"first"), ("b", b"second")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.png").write_bytes(content)
    rows = [{"file": str(tmp_path / s / "x.png"), "caption": c} for s, c in (("a", "첫째"), ("b", "둘째"))]
    root = tmp_path / "project"
    table = land_images(rows, tmp_path / "coco", root / "data/raw/images-coco", root)
    landed = [(root / p).read_bytes() for p in table["image_path"]]
    assert landed == [b"first", b"second"] and table["image_id"].is_unique  # each caption with its own image


def test_a_copy_killed_midway_leaves_nothing_that_passes_for_the_image(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "p.png").write_bytes(b"x" * 1000)
    root, rows = tmp_path / "project", [{"file": "p.png", "caption": "사진"}]
    raw = root / "data/raw/images-coco"

    def other_file_system(src, dst):
        raise OSError("Invalid cross-device link")

    def killed(src, dst):
        with open(dst, "wb") as f:
            f.write(b"x" * 10)  # part of the file, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "link", other_file_system)
    monkeypatch.setattr(shutil, "copyfile", killed)
    with pytest.raises(KeyboardInterrupt):
        land_images(rows, tmp_path / "src", raw, root)
    assert not (raw / "p.png").exists()
    monkeypatch.setattr(shutil, "copyfile", _real_copy)
    table = land_images(rows, tmp_path / "src", raw, root)
    assert (root / table["image_path"][0]).read_bytes() == b"x" * 1000  # the rerun lands it whole


_real_copy = shutil.copyfile
