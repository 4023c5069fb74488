from kocap.aihub.tree import (
    TreeFile,
    changed_files,
    parse_dataset_list,
    parse_tree,
    render_tree,
    snapshot_id,
    split_notice,
)

# The real capture from shared/notes/aihub.md, verbatim (trailing spaces included).
CAPTURE = """The contents are encoded in UTF-8 including Korean characters. 
If the following contents are not output normally, 
Please modify the character information of the OS. 
=================공지사항=================== 
========================================== 

    └─134-1.감정이 태깅된 자유대화 (성인)
        └─01-1.정식개방데이터
            ├─Training
            │  ├─01.원천데이터
            │  │  ├─TS_01.실내_1.zip | 47 GB | 507715
            │  │  └─TS_02.실외.zip | 37 GB | 507720
            │  └─02.라벨링데이터
            │      ├─TL_01.실내.zip | 97 MB | 507721
            └─Validation
                └─02.라벨링데이터
                    └─VL_02..실외.zip | 3 MB | 507726
"""


def test_real_capture_parses_to_full_paths_keys_and_sizes():
    files = parse_tree(CAPTURE)
    top = "134-1.감정이 태깅된 자유대화 (성인)/01-1.정식개방데이터"
    assert [(f.path, f.filekey, f.display_size) for f in files] == [
        (f"{top}/Training/01.원천데이터/TS_01.실내_1.zip", "507715", "47 GB"),
        (f"{top}/Training/01.원천데이터/TS_02.실외.zip", "507720", "37 GB"),
        (f"{top}/Training/02.라벨링데이터/TL_01.실내.zip", "507721", "97 MB"),
        (f"{top}/Validation/02.라벨링데이터/VL_02..실외.zip", "507726", "3 MB"),
    ]


def test_display_size_is_a_range_not_an_exact_size():
    low, high = TreeFile("a.zip", "1", "3 MB").approx_bytes()
    assert low <= 3 * 1024**2 <= high and high - low >= 1024**2


def test_notice_is_split_from_the_tree():
    text = CAPTURE.replace(
        "=================공지사항=================== \n",
        "=================공지사항=================== \n점검 안내: 12월 1일\n",
    )
    notice, _ = split_notice(text)
    assert notice == "점검 안내: 12월 1일"
    assert len(parse_tree(text)) == 4


def test_dataset_list_splits_at_the_first_comma_only():
    text = "==================DataSet 목록==================\n86, 감성 대화 말뭉치\n71849, 대한민국 배경영상, 상세 설명문\n=====\n"
    assert parse_dataset_list(text) == {"86": "감성 대화 말뭉치", "71849": "대한민국 배경영상, 상세 설명문"}


def test_render_and_parse_round_trip_with_odd_names():
    files = [
        TreeFile("123.t/v/Training/[라벨]train.zip", "1", "969 KB"),
        TreeFile("123.t/v/Training/TS_01.zip", "2", "2 GB"),
        TreeFile("123.t/v/Validation/VL_02..실외.zip", "3", "3 MB"),
    ]
    assert parse_tree(render_tree("t", files)) == files


def test_changed_files_are_new_or_rekeyed_or_resized():
    old = [TreeFile("a.zip", "1", "1 MB"), TreeFile("b.zip", "2", "1 MB"), TreeFile("c.zip", "3", "1 MB")]
    new = [
        TreeFile("a.zip", "1", "1 MB"),
        TreeFile("b.zip", "9", "1 MB"),
        TreeFile("c.zip", "3", "2 MB"),
        TreeFile("d.zip", "4", "1 MB"),
    ]
    assert [f.path for f in changed_files(old, new)] == ["b.zip", "c.zip", "d.zip"]
    assert snapshot_id(old) == snapshot_id(list(reversed(old))) != snapshot_id(new)


def test_the_lost_share_weighs_filekeys_by_the_trees_sizes():
    """A filekey may be one label file or an archive of a thousand clips: counting filekeys called a lost
    47 GB archive beside a 1 GB one half the data."""
    from kocap.data.ingest import lost_share

    big, small = TreeFile("d/TS_01.zip", "11", "47 GB"), TreeFile("d/TL_01.zip", "12", "1 GB")
    assert lost_share([big, small], [big, small]) == ([], 0.0)
    missing, share = lost_share([big, small], [small])
    assert missing == ["11"] and share == 0.9792  # 47 of 48 GB
    unknown = TreeFile("d/TS_02.zip", "13", "big")  # a size that cannot be read: each filekey weighs the same
    assert lost_share([big, small, unknown], [big]) == (["12", "13"], 0.6667)


def test_the_gate_names_partial_data_in_its_reasons():
    from kocap.config import load_config
    from kocap.registry.gate import gate

    cfg = load_config("/nonexistent", ["registry.min_clips=1"])
    metrics = {"primary": 0.3, "primary_metric": "meteor", "unique_share": 1.0, "grounding": 0.2, "samples": 5}
    validation = {"reject_frac": 0.0, "kept_by_split": {"train": 20, "val": 5}}
    promote, reasons = gate(metrics, validation, None, cfg, lost={"share": 0.125, "filekeys": ["11", "12"]})
    assert (
        promote and reasons[-1].startswith("trained on partial data: 12.5% of the dataset") and "11, 12" in reasons[-1]
    )
    assert gate(metrics, validation, None, cfg, lost={"share": 0.0, "filekeys": []}) == (True, reasons[:1])
