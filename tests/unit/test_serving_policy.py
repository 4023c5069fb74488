"""What the served model agrees to read, decided before any model runs."""

from __future__ import annotations

import base64
import os

import pandas as pd
import pytest

from kocap.registry.pyfunc_model import MAX_ITEMS, RequestRefused, _allowed_path, _b64, items_of


def test_without_a_served_folder_no_path_is_read_and_the_answer_never_tells_what_exists(tmp_path):
    real = tmp_path / "real.mp4"
    real.write_bytes(b"x")
    errors = set()
    for probe in (str(real), "/root/.ssh/id_rsa", "/nonexistent", "x" * 100_000):
        with pytest.raises(ValueError) as refused:
            _allowed_path(probe, None)
        errors.add(str(refused.value))
    assert len(errors) == 1 and "video_b64" in errors.pop()


def test_a_served_folder_allows_files_inside_it_only(tmp_path):
    root = (tmp_path / "videos").resolve()
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"x")
    os.symlink("/etc/passwd", root / "escape.mp4")
    assert _allowed_path("sub/a.mp4", root) == root / "sub" / "a.mp4"
    for outside in ("/etc/passwd", "../../etc/passwd", "escape.mp4", str(root) + "/../x"):
        with pytest.raises(ValueError, match="outside the folder"):
            _allowed_path(outside, root)
    with pytest.raises(ValueError, match="at most 4096"):
        _allowed_path("a" * 100_000, root)
    with pytest.raises(ValueError, match="no video file"):
        _allowed_path("sub/missing.mp4", root)


def test_requests_are_refused_whole_only_when_empty_oversized_or_shapeless():
    assert items_of(pd.DataFrame({"video_b64": ["QUJD"]})) == [("b64", "QUJD")]
    assert items_of([b"abc"]) == [("bytes", b"abc")]
    for bad, why in (
        (pd.DataFrame({"video_b64": []}), "no videos"),
        (pd.DataFrame({"video_b64": ["QQ=="] * (MAX_ITEMS + 1)}), f"at most {MAX_ITEMS}"),
        (pd.DataFrame({"path": ["a"]}), "video_b64"),
    ):
        with pytest.raises(RequestRefused, match=why):
            items_of(bad)
    assert _b64(base64.b64encode(b"video").decode()) == b"video"
    with pytest.raises(ValueError, match="not valid base64"):
        _b64("not base64!")
