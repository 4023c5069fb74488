"""The small parts under the operations flows: what a stage-2 worker must pull, the lock that one
process may re-enter, how dvc.lock entries from another workspace are merged, and that no stage
depends on the `ops` params (changing how kocap runs never retrains)."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest
import yaml

from kocap import dvcops, handoff, pipeline
from kocap.workspace import WorkspaceBusy, exclusive


def test_a_stage_2_worker_pulls_exactly_the_outputs_stage_2_reads():
    assert handoff.input_outs("finetune") == ["models/base", "models/align", "data/validated", "data/frames"]
    assert [s.name for s in handoff.producers("finetune")] == ["validate", "frames", "assemble", "align"]
    assert handoff.input_outs("ingest") == []


def test_no_stage_depends_on_the_ops_params():
    assert not [s.name for s in pipeline.STAGES if any(p.split(".")[0] == "ops" for p in s.params)]


def _try_lock(root, out):
    try:
        with exclusive(root):
            out.put("got it")
    except WorkspaceBusy as exc:
        out.put(str(exc))


def test_the_workspace_lock_is_reentrant_here_and_exclusive_elsewhere(tmp_path):
    with exclusive(tmp_path):
        with exclusive(tmp_path):  # the CLI holds it, then the flow takes it again: no self-deadlock
            pass
        q = mp.get_context("spawn").Queue()
        other = mp.get_context("spawn").Process(target=_try_lock, args=(tmp_path, q))
        other.start()
        other.join(60)
        assert "another kocap run holds" in q.get(timeout=5)
    with exclusive(tmp_path, wait_s=0):  # released by the outer block
        assert f'"pid": {os.getpid()}' in (tmp_path / ".kocap.lock").read_text()
    assert (tmp_path / ".kocap.lock").read_text() == ""  # names the live owner only


def test_merged_lock_entries_replace_only_their_stages(tmp_path):
    (tmp_path / "dvc.lock").write_text(
        yaml.safe_dump(
            {"schema": "2.0", "stages": {"ingest": {"cmd": "kocap stage ingest"}, "finetune": {"cmd": "old"}}}
        )
    )
    dvcops.merge_lock(tmp_path, {"finetune": {"cmd": "kocap stage finetune", "outs": [{"path": "models/finetune"}]}})
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert lock["schema"] == "2.0" and lock["stages"]["ingest"] == {"cmd": "kocap stage ingest"}
    assert lock["stages"]["finetune"]["outs"] == [{"path": "models/finetune"}]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    dvcops.merge_lock(fresh, {"a": {"cmd": "x"}})  # a worker's first request: no dvc.lock yet
    assert yaml.safe_load((fresh / "dvc.lock").read_text()) == {"schema": "2.0", "stages": {"a": {"cmd": "x"}}}


@pytest.mark.parametrize("runner", ["thread", "dask"])
def test_the_task_runner_follows_ops(runner):
    from kocap.config import OpsParams
    from tasks.fanout import task_runner

    assert (
        type(task_runner(OpsParams(task_runner=runner), 2)).__name__
        == {"thread": "ThreadPoolTaskRunner", "dask": "DaskTaskRunner"}[runner]
    )


def test_shards_share_the_cores_of_their_machine():
    from kocap.config import OpsParams
    from tasks.fanout import _sharing

    assert _sharing(OpsParams(task_runner="thread"), 4, 3) == 3  # no more workers than shards
    assert _sharing(OpsParams(task_runner="thread"), 2, 8) == 2
    assert _sharing(OpsParams(task_runner="dask", dask_workers=3), 2, 8) == 3  # a local cluster, this machine
    assert _sharing(OpsParams(task_runner="dask", dask_address="tcp://10.0.0.5:8786"), 2, 8) == 1  # its own cores


def test_a_shard_worker_takes_its_share_of_torch_threads():
    import threading

    import torch

    from kocap.model import runtime

    seen = {}

    def worker(workers):
        seen[workers] = (runtime.share_cores(workers), torch.get_num_threads())

    before = torch.get_num_threads()
    for workers in (1, 2, 64):
        t = threading.Thread(target=worker, args=(workers,))
        t.start()
        t.join()
    assert seen[2] == (max(1, min(runtime.cores(), before) // 2),) * 2
    assert seen[64] == (1, 1)  # never zero threads
    assert seen[1] == (before, before)  # a lone worker keeps torch's default
    assert torch.get_num_threads() == before  # the worker threads' counts stay theirs
