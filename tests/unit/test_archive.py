import io
import os
import tarfile
import zipfile

import pytest

from kocap.aihub.archive import extract_zip, member_name, merge_parts, receive_parts, safe_relpath, verify_zip
from kocap.aihub.errors import TransferError, UnsafeArchiveError
from kocap.sample.build import Cp949ZipInfo


def _tar(members, fmt=tarfile.GNU_FORMAT) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _parts(data: bytes, size: int, prefix="top/v/Training/TS_01.zip"):
    return [(f"{prefix}.part{off}", data[off : off + size]) for off in range(0, len(data), size)]


def test_parts_merge_by_integer_offset_not_lexically(tmp_path):
    data = os.urandom(12 * 100 + 37)
    members = _parts(data, 100)
    assert len(members) > 10
    names = [n for n, _ in members]
    assert sorted(names) != names  # '.part1000' sorts before '.part200': a lexical merge would be wrong
    sets, notes = {}, []
    receive_parts(_tar(list(reversed(members))), tmp_path / "staging", sets, notes)
    (pset,) = sets.values()
    assert merge_parts(pset, tmp_path / "out.zip") == len(data)
    assert (tmp_path / "out.zip").read_bytes() == data
    assert not any((tmp_path / "staging" / "parts").iterdir())  # parts are consumed by the merge


def test_long_names_arrive_through_gnu_longlink(tmp_path):
    name = "123." + "아주 긴 데이터셋 이름" * 12 + "/TS_01.zip"
    sets, _ = {}, []
    receive_parts(_tar(_parts(b"x" * 50, 20, name)), tmp_path, sets, _)
    assert list(sets) == [name]


def test_a_missing_part_breaks_contiguity(tmp_path):
    members = _parts(os.urandom(500), 100)
    del members[2]
    sets, notes = {}, []
    receive_parts(_tar(members), tmp_path, sets, notes)
    with pytest.raises(TransferError, match="part at offset 300 but 200 bytes came before it"):
        merge_parts(next(iter(sets.values())), tmp_path / "out.zip")


def test_a_duplicated_part_set_keeps_the_first_copy(tmp_path):
    first, second = _parts(b"a" * 250, 100), _parts(b"b" * 250, 100)
    sets, notes = {}, []
    receive_parts(_tar(first + second), tmp_path / "s", sets, notes)
    merge_parts(next(iter(sets.values())), tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"a" * 250
    assert len(notes) == 3 and all("duplicate part" in n for n in notes)


def test_a_stream_cut_inside_a_member_is_a_transfer_error(tmp_path):
    whole = _tar(_parts(os.urandom(3000), 1000)).getvalue()
    sets, notes = {}, []
    with pytest.raises(TransferError, match="cut short"):
        receive_parts(io.BytesIO(whole[:2200]), tmp_path, sets, notes)
    assert sorted(sets["top/v/Training/TS_01.zip"].parts) == [0]  # the whole part before the cut is kept


@pytest.mark.parametrize("name", ["/etc/passwd.part0", "../../escape.zip.part0", "a/../../b.part0", "C:/x.part0"])
def test_hostile_tar_member_paths_are_refused(tmp_path, name):
    with pytest.raises(UnsafeArchiveError):
        receive_parts(_tar([(name, b"evil")]), tmp_path / "staging", {}, [])
    assert not (tmp_path.parent / "escape.zip.part0").exists()


def test_tar_links_are_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        link = tarfile.TarInfo("data/link.part0")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    buf.seek(0)
    with pytest.raises(UnsafeArchiveError, match="link"):
        receive_parts(buf, tmp_path, {}, [])


def test_safe_relpath_normalises_harmless_names():
    assert str(safe_relpath("./a//b/c.mp4")) == "a/b/c.mp4"


def _zip(path, members, cp949=False):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(Cp949ZipInfo(name) if cp949 else zipfile.ZipInfo(name), data)
    return path


def test_cp949_member_names_without_the_utf8_flag_are_decoded(tmp_path):
    z = _zip(tmp_path / "TS.zip", [("도시_00001.mp4", b"v1"), ("폴더/해변 영상.mp4", b"v2")], cp949=True)
    with zipfile.ZipFile(z) as zf:
        raw = zf.infolist()[0]
        assert raw.filename != "도시_00001.mp4" and not raw.flag_bits & 0x800  # what zipfile alone gives
        assert member_name(raw.filename, raw.flag_bits) == "도시_00001.mp4"
    out = extract_zip(z, tmp_path / "out", tmp_path / "conflicts")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in out.written) == [
        "도시_00001.mp4",
        "폴더/해변 영상.mp4",
    ]


def test_utf8_flagged_names_are_kept_as_they_are(tmp_path):
    z = _zip(tmp_path / "TL.zip", [("라벨.json", b"{}")])
    assert [p.name for p in extract_zip(z, tmp_path / "o", tmp_path / "c").written] == ["라벨.json"]


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_hostile_zip_members_are_refused_before_anything_is_written(tmp_path, name):
    z = _zip(tmp_path / "bad.zip", [("good.txt", b"fine"), (name, b"evil")])
    with pytest.raises(UnsafeArchiveError):
        extract_zip(z, tmp_path / "target", tmp_path / "c")
    assert not (tmp_path / "target").exists() and not (tmp_path / "evil.txt").exists()


def test_zip_symlink_members_are_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "l.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_zip(tmp_path / "l.zip", tmp_path / "t", tmp_path / "c")


def test_existing_raw_files_are_never_overwritten(tmp_path):
    extract_zip(_zip(tmp_path / "v1.zip", [("a.mp4", b"old"), ("b.mp4", b"same")]), tmp_path / "raw", tmp_path / "c")
    out = extract_zip(
        _zip(tmp_path / "v2.zip", [("a.mp4", b"new"), ("b.mp4", b"same"), ("c.mp4", b"added")]),
        tmp_path / "raw",
        tmp_path / "c",
    )
    assert (tmp_path / "raw" / "a.mp4").read_bytes() == b"old"
    assert [p.read_bytes() for p in out.conflicts] == [b"new"]
    assert [p.name for p in out.unchanged] == ["b.mp4"] and [p.name for p in out.written] == ["c.mp4"]


def test_corrupt_zip_fails_crc_verification(tmp_path):
    z = _zip(tmp_path / "x.zip", [("a.bin", os.urandom(4000))])
    data = bytearray(z.read_bytes())
    data[200] ^= 0xFF
    z.write_bytes(bytes(data))
    with pytest.raises(TransferError, match="CRC mismatch|not a valid zip"):
        verify_zip(z)
    z.write_bytes(bytes(data[:1000]))
    with pytest.raises(TransferError, match="not a valid zip"):
        verify_zip(z)
