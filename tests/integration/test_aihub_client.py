"""The real AI-Hub client against the loopback emulator, through every failure in aihub.md."""

from __future__ import annotations

import zipfile

import pytest
import requests

from kocap.aihub import errors
from kocap.aihub.client import AIHubClient, ApiKey, raise_for_answer
from kocap.aihub.download import STAGING, fetch
from kocap.aihub.emulator import Emulator

KEY = "test-key-7f3a9c"


@pytest.fixture
def emu(sample_server_root):
    with Emulator(sample_server_root, {KEY}, part_size=1024) as e:
        yield e


@pytest.fixture
def client(emu):
    return AIHubClient(emu.url, ApiKey(KEY), timeout_s=20)


def _source_bytes(emu, f):
    return (emu.root / "71849" / f.path).read_bytes()


def test_list_and_tree_survive_502_with_a_good_body(emu, client):
    emu.faults.tree_502_every = 1  # every answer is a 502
    assert client.list_datasets() == {"71849": "대한민국 배경영상 상세 설명문 데이터"}
    files = client.tree("71849")
    assert len(files) == 12 and {f.name[:3] for f in files} == {"TS_", "TL_", "VS_", "VL_"}
    assert all(f.filekey.isdigit() and f.display_size.endswith("B") for f in files)


def test_download_merges_many_parts_and_verifies(emu, client, tmp_path):
    files = client.tree("71849")
    big = max(files, key=lambda f: len(_source_bytes(emu, f)))
    assert len(_source_bytes(emu, big)) > 11 * 1024  # more than 10 parts: offset order matters
    result = fetch(client, "71849", files, tmp_path)
    assert result.failed == {} and sorted(result.landed) == sorted(f.filekey for f in files)
    for f in files:
        assert (tmp_path / f.path).read_bytes() == _source_bytes(emu, f)
    assert not (tmp_path / STAGING).exists()
    assert emu.downloads == [[f.filekey for f in files]]


def test_chosen_filekeys_only(emu, client, tmp_path):
    files = client.tree("71849")[:2]
    result = fetch(client, "71849", files, tmp_path)
    assert sorted(result.landed) == sorted(f.filekey for f in files)
    assert emu.downloads == [[f.filekey for f in files]]


def test_duplicated_part_set_keeps_the_first_copy(emu, client, tmp_path):
    emu.faults.duplicate_parts = True
    f = client.tree("71849")[0]
    result = fetch(client, "71849", [f], tmp_path)
    assert (tmp_path / f.path).read_bytes() == _source_bytes(emu, f)
    assert result.notes and all("duplicate part" in n for n in result.notes)


def test_missing_content_length_still_downloads(emu, client, tmp_path):
    emu.faults.omit_content_length = True
    files = client.tree("71849")
    assert not fetch(client, "71849", files, tmp_path).failed


def test_a_transfer_cut_short_is_retried_and_the_others_land(emu, client, tmp_path):
    files = client.tree("71849")
    victim = files[-1]
    emu.faults.cut_short[victim.filekey] = 1
    result = fetch(client, "71849", files, tmp_path, retries=2)
    assert result.failed == {} and len(result.landed) == len(files)
    assert emu.downloads[1] and victim.filekey in emu.downloads[1] and len(emu.downloads) == 2
    assert (tmp_path / victim.path).read_bytes() == _source_bytes(emu, victim)


def test_a_cut_at_a_member_boundary_without_length_is_caught(emu, client, tmp_path):
    files = client.tree("71849")
    victim = files[3]
    emu.faults.cut_at_boundary[victim.filekey] = 1
    result = fetch(client, "71849", files, tmp_path)
    assert result.failed == {} and emu.downloads[1] == [victim.filekey]  # only the missing file again


def test_a_corrupt_zip_is_refused_then_fetched_again(emu, client, tmp_path):
    f = client.tree("71849")[2]
    emu.faults.corrupt[f.filekey] = 1
    result = fetch(client, "71849", [f], tmp_path)
    assert result.failed == {} and len(emu.downloads) == 2
    with zipfile.ZipFile(tmp_path / f.path) as zf:
        assert zf.testzip() is None


def test_a_filekey_that_keeps_failing_is_reported_and_the_rest_land(emu, client, tmp_path):
    files = client.tree("71849")
    bad = files[1]
    emu.faults.corrupt[bad.filekey] = 99
    result = fetch(client, "71849", files, tmp_path, retries=2)
    assert list(result.failed) == [bad.filekey] and "CRC" in result.failed[bad.filekey]
    assert len(result.landed) == len(files) - 1 and len(emu.downloads) == 3
    assert not (tmp_path / bad.path).exists()  # nothing half-verified where data lives
    message = str(errors.IncompleteDownloadError(result.failed))
    assert bad.filekey in message and "re-run" in message


def test_leftovers_of_a_crashed_run_never_reach_the_data_folder(emu, client, tmp_path):
    junk = tmp_path / STAGING / "parts" / "00000007"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"half a part from a killed run")
    f = client.tree("71849")[0]
    emu.faults.cut_short[f.filekey] = 99
    fetch(client, "71849", [f], tmp_path, retries=1)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []  # no parts, no half-merged zip, no staging


@pytest.mark.parametrize(
    "fault, error",
    [
        ("not_approved", errors.NotApprovedError),
        ("expired", errors.ApprovalExpiredError),
        ("overseas", errors.OverseasError),
    ],
)
def test_server_refusals_map_to_clear_errors(emu, client, tmp_path, fault, error):
    if fault == "overseas":
        emu.faults.overseas = True
    else:
        getattr(emu.faults, fault).add("71849")
    with pytest.raises(error) as info:
        fetch(client, "71849", client.tree("71849")[:1], tmp_path)
    assert any(word in str(info.value) for word in ("apply", "re-apply", "Korean network"))


def test_old_client_endpoint_is_reported_as_outdated(emu):
    resp = requests.get(f"{emu.url}/down/0.5/71849.do", params={"fileSn": "all"}, headers={"apikey": KEY})
    assert resp.status_code == 502
    with pytest.raises(errors.OutdatedClientError, match="update kocap"):
        raise_for_answer(resp.status_code, resp.text, "71849")


def test_unknown_dataset_key(client, tmp_path):
    with pytest.raises(errors.UnknownDatasetError, match="kocap aihub list"):
        client.tree("99999")
    with pytest.raises(errors.UnknownDatasetError):
        with client.download_stream("99999", None):
            pass


def test_missing_and_wrong_keys(emu, tmp_path):
    with pytest.raises(errors.MissingKeyError, match="AIHUB_APIKEY"):
        ApiKey("")
    nokey = AIHubClient(emu.url)
    with pytest.raises(errors.MissingKeyError):
        nokey.check_key()
    wrong = AIHubClient(emu.url, ApiKey("not-the-key"))
    with pytest.raises(errors.InvalidKeyError):
        wrong.check_key()
    with pytest.raises(errors.InvalidKeyError):
        fetch(wrong, "71849", wrong.tree("71849")[:1], tmp_path)
    AIHubClient(emu.url, ApiKey(KEY)).check_key()  # the right key passes


def test_the_key_cannot_leak_through_repr_or_pickle():
    import pickle

    key = ApiKey("super-secret-123")
    assert "super-secret-123" not in repr(key) + str(key) + f"{key}"
    with pytest.raises(TypeError):
        pickle.dumps(key)
