import json

import pytest

from kocap.aihub.labels import LabelError, parse_71495, parse_71849, parse_timestamp, read_label


def _write(tmp_path, data, encoding="utf-8-sig", name="x.json"):
    path = tmp_path / name
    path.write_bytes((data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)).encode(encoding))
    return path


@pytest.mark.parametrize("field", ["description_kr", "description_ko"])
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "cp949"])
def test_71849_caption_in_either_field_and_encoding(tmp_path, field, encoding):
    path = _write(
        tmp_path, {"annotation": {field: " 맑은 날 도시 풍경입니다. "}, "video": {"duration": 12.5}}, encoding
    )
    (sample,), rejected = parse_71849(read_label(path), "clip1")
    assert (sample.sample_id, sample.caption_ko, sample.duration_s, rejected) == (
        "clip1",
        "맑은 날 도시 풍경입니다.",
        12.5,
        [],
    )


@pytest.mark.parametrize(
    "data, reason",
    [
        ('{"annotation": {"description_kr": "x"', "bad json"),
        ({"annotation": {"description_kr": ""}}, "missing caption"),
        ({"annotation": {"caption": "영상"}}, "missing caption"),
        ({"label": "no annotation"}, "missing caption"),
    ],
)
def test_71849_bad_labels_are_label_errors_with_reasons(tmp_path, data, reason):
    with pytest.raises(LabelError, match=reason):
        parse_71849(read_label(_write(tmp_path, data)), "c")


def test_undecodable_label_names_the_encoding(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"\xff\xfe\xfa\x00\x81")
    with pytest.raises(LabelError, match="encoding"):
        read_label(path)


@pytest.mark.parametrize("text, seconds", [("00:05.50000", 5.5), ("1:02.25000", 62.25), ("12:00.0", 720.0)])
def test_timestamps_in_both_formats(text, seconds):
    assert parse_timestamp(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5.5", "00:75.0", "a:bc", "", None])
def test_bad_timestamps_are_refused(text):
    with pytest.raises(LabelError):
        parse_timestamp(text)


def test_71495_one_sample_per_span_and_bad_spans_rejected(tmp_path):
    data = {
        "duration": 60,
        "sentences": [
            {"timestamps": ["00:00.00000", "00:10.50000"], "sentences_ko": "사람이 걷는다.", "sentences_en": "walks"},
            {"timestamps": ["00:20.00000", "00:15.00000"], "sentences_ko": "거꾸로 된 구간"},
            {"timestamps": ["00:50.00000", "01:05.00000"], "sentences_ko": "길이를 넘는 구간"},
            {"timestamps": ["0:30.00000", "0:40.00000"], "sentences_ko": "차가 지나간다."},
            {"timestamps": ["00:41.0"], "sentences_ko": "끝이 없는 구간"},
        ],
    }
    samples, rejected = parse_71495(read_label(_write(tmp_path, data)), "v1")
    assert [(s.sample_id, s.clip_id, s.start_s, s.end_s) for s in samples] == [
        ("v1_000", "v1", 0.0, 10.5),
        ("v1_003", "v1", 30.0, 40.0),
    ]
    assert [r.split(":")[0] for r in rejected] == ["span 1", "span 2", "span 4"]
    assert "inverted" in rejected[0] and "past the clip" in rejected[1]


def test_71495_without_any_usable_span_is_rejected_whole(tmp_path):
    data = {"duration": 10, "sentences": [{"timestamps": ["00:05.0", "00:01.0"], "sentences_ko": "x"}]}
    with pytest.raises(LabelError, match="no usable span"):
        parse_71495(read_label(_write(tmp_path, data)), "v")


def test_a_label_pairs_only_with_its_own_splits_video_and_ambiguity_is_refused(tmp_path):
    """The split-less fallback must not pair a training label with the validation video of the same
    name, and two source files with one stem must not overwrite each other: refused with a reason."""
    from kocap.aihub.tree import TreeFile
    from kocap.data.ingest import _index_videos, pair_video

    raw = tmp_path / "raw"
    archives = {
        "71849/Training/01.원천데이터/TS_1.zip": ["a", "dup"],
        "71849/Training/01.원천데이터/TS_2.zip": ["dup"],
        "71849/Validation/01.원천데이터/VS_1.zip": ["b", "c"],
        "71849/extra/loose.zip": ["c", "d"],  # no split in its path
    }
    for path, stems in archives.items():
        folder = raw / "extracted" / path.removesuffix(".zip")
        folder.mkdir(parents=True)
        for stem in stems:
            (folder / f"{stem}.mp4").write_bytes(b"x")
    videos = _index_videos(raw, [TreeFile(p, str(i), "1 MB") for i, p in enumerate(archives)])
    assert pair_video(videos, "train", "a")[0][0].parent.name == "TS_1"
    missing, why = pair_video(videos, "train", "b")  # only a validation video has that name
    assert missing is None and why == "video missing: no source file b.mp4 in the train split"
    assert pair_video(videos, "train", "d")[0][0].parent.name == "loose"  # split-less source: the fallback
    assert pair_video(videos, "val", "c")[0][0].parent.name == "VS_1"  # its own split first
    none, why = pair_video(videos, "train", "dup")
    assert none is None and why.startswith("ambiguous: 2 source files named dup.mp4 in the train split")
    assert pair_video(videos, None, "a")[0][0].parent.name == "TS_1"  # a split-less label: any split
    none, why = pair_video(videos, None, "c")  # a split-less label, a name in two places
    assert none is None and "ambiguous: 2 source files named c.mp4" in why
