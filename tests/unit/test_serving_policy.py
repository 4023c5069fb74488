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


def test_a_bad_file_inside_the_served_folder_is_answered_without_the_servers_paths(tmp_path, monkeypatch):
    import tempfile
    from types import SimpleNamespace

    from kocap.config import load_config
    from kocap.registry.pyfunc_model import caption_batch

    root = (tmp_path / "served-videos-here").resolve()
    root.mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # as on a server: the videos are not in /tmp
    (root / "notes.mp4").write_text("not a video", encoding="utf-8")
    captioner = SimpleNamespace(cfg=load_config("/nonexistent"))  # never reaches the model: nothing decodes
    answer = caption_batch(captioner, [("path", "notes.mp4"), ("bytes", b"not a video either")], root)
    assert list(answer["caption"]) == ["", ""] and all(answer["error"])
    for error in answer["error"]:
        assert "/tmp" not in error and "served-videos" not in error and "kocap-serve-" not in error, error
    assert "not a readable video" in answer["error"][0] and "<file>" in answer["error"][0]


def test_a_request_heavier_than_the_total_limit_is_refused_whole(monkeypatch):
    from kocap.registry import pyfunc_model

    monkeypatch.setattr(pyfunc_model, "MAX_REQUEST_MB", 1)
    half = base64.b64encode(b"x" * (600 * 1024)).decode()  # 0.6 MB each: each allowed on its own
    assert len(items_of(pd.DataFrame({"video_b64": [half]}))) == 1
    with pytest.raises(RequestRefused, match="at most 1 MB: split the request"):
        items_of(pd.DataFrame({"video_b64": [half, half]}))
    with pytest.raises(RequestRefused, match="at most 1 MB"):
        items_of([b"x" * (600 * 1024)] * 2)


@pytest.mark.parametrize(
    "body, kinds",
    [
        ('{"inputs": "ok.mp4"}', [("path", "ok.mp4")]),
        ('{"inputs": ["a.mp4", "b.mp4"]}', [("path", "a.mp4"), ("path", "b.mp4")]),
        ('{"inputs": {"video_b64": ["QUJD"]}}', [("b64", "QUJD")]),
        ('{"instances": [{"video_b64": "QUJD"}]}', [("b64", "QUJD")]),
    ],
)
def test_every_json_shape_the_scoring_server_accepts_becomes_items(body, kinds):
    """The scoring server hands predict a 0-d array for a scalar; iterating it raised a TypeError whose
    answer was a 400 with a full stack trace naming the project's and the virtualenv's paths."""
    from mlflow.pyfunc.scoring_server import _parse_json_data

    assert items_of(_parse_json_data(body, None, None).data) == kinds


def test_a_request_the_model_cannot_read_is_answered_without_a_trace_or_a_path():
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import _parse_json_data

    from kocap.registry.pyfunc_model import KocapCaptioner

    served = KocapCaptioner()
    served.captioner = None  # a scalar path is refused per item before any model runs
    answer = served.predict(None, _parse_json_data('{"inputs": "ok.mp4"}', None, None).data)
    assert answer["caption"].tolist() == [""] and "not read by this server" in answer["error"][0]
    for body, why in (('{"inputs": [[1, 2], [3, 4]]}', "2-dimensional"), ('{"inputs": {"x": [1]}}', "video_b64")):
        with pytest.raises(MlflowException, match=why) as refused:
            served.predict(None, _parse_json_data(body, None, None).data)
        assert refused.value.get_http_status_code() == 400 and "Traceback" not in refused.value.message
    served.captioner = object()  # a model that breaks mid-request: the answer is kocap's message, not a trace
    with pytest.raises(MlflowException, match="captioning failed") as failed:
        served.predict(None, [b"\x00" * 64])
    assert "/" not in failed.value.message.split("captioning failed", 1)[1]
