"""`dvc repro` and the Prefect lifecycle flow agree: one decides, the other sees it (real Prefect
temporary server, real DVC repo and local remote, in a scratch copy of the project)."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kocap.config import write_overrides
from kocap.scratch import project_env

from ..conftest import SMALL
from .projects import dvc, make_project, sh

pytestmark = pytest.mark.slow
_sh, _dvc = sh, dvc


def _kocap(cwd, *args):
    proc = _sh([sys.executable, "-m", "kocap.cli", "run", *args], cwd)
    summary = json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])
    return summary, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # frame and evaluation shards fan out as Prefect tasks on a local Dask cluster (prefect-dask)
    return make_project(tmp_path_factory.mktemp("project"), ["ops.task_runner=dask"])


def test_flow_then_dvc_agree(project):
    summary, logs = _kocap(project)
    assert "shard(s) on DaskTaskRunner" in logs and "evaluate-shard" in logs and "frames-shard" in logs
    assert all(
        summary[s]["ran"] is True
        for s in ("ingest", "validate", "frames", "assemble", "align", "finetune", "evaluate", "register")
    )
    assert summary["pushed_files"] > 0
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}
    assert "didn't change" in _dvc(project, "repro").stdout
    assert any((project / ".dvc-remote").rglob("*")), "outputs reached the local DVC remote"
    # the module's later runs fan out on threads: `ops` is no stage's param, so nothing reruns for it, and a
    # local Dask cluster costs each fan-out ~20 s wall, ~40 s CPU here (two worker processes import torch)
    write_overrides(project / "params.yaml", ["ops.task_runner=thread"])


def test_shards_fanned_out_on_dask_equal_a_plain_stage_run(project):
    """Recompute frames and evaluation in one process, no cache: DVC finds the very same outputs."""
    for derived in ("data/frames", ".kocap-cache"):
        shutil.rmtree(project / derived)
    for stage in ("frames", "evaluate"):
        _sh([sys.executable, "-m", "kocap.cli", "stage", stage], project)
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}


def _mlflow(project):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return mlflow.MlflowClient()


def test_the_registered_model_carries_its_lineage_and_captions(project):
    client = _mlflow(project)
    (version,) = client.search_model_versions("name='kocap'")
    tags = version.tags
    assert tags["git.commit"] != "unknown" and tags["git.dirty"] in ("true", "false")
    assert tags["aihub.dataset_key"] == "71849" and len(tags["aihub.snapshot_id"]) == 16
    lock = (project / "dvc.lock").read_text(encoding="utf-8")
    assert tags["dvc.data/manifest.parquet"] in lock and tags["dvc.data/frames"] in lock
    run = client.get_run(tags["run_id"])
    assert run.data.params["data.sample.num_clips"] == str(SMALL["num_clips"])
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"manifest", "validated", "frames"}
    assert client.get_model_version_by_alias("kocap", "challenger").version == version.version
    if tags["kocap.decision"] != "champion":  # the quick model may fail the gate: the manual override is logged
        _sh(
            [sys.executable, "-m", "kocap.cli", "promote", str(version.version), "--force", "--reason", "test"], project
        )
        assert client.get_model_version("kocap", version.version).tags["kocap.manual_override"] == "true"
    lineage = _sh([sys.executable, "-m", "kocap.cli", "lineage", "models:/kocap@champion"], project).stdout
    assert f"git checkout {tags['git.commit']}" in lineage and "dvc pull" in lineage
    clip = next((project / "data/raw").rglob("*.mp4"))
    out = (
        _sh(
            [
                sys.executable,
                "-m",
                "kocap.cli",
                "caption",
                str(clip),
                str(project / "missing.mp4"),
                str(project / "params.yaml"),
            ],
            project,
        )
        .stdout.strip()
        .splitlines()
    )
    assert len(out) == 3 and "ERROR" not in out[0] and any("\uac00" <= ch <= "\ud7a3" for ch in out[0])
    assert "cannot read it" in out[1] and "not a readable video" in out[2]


def test_an_exported_version_captions_the_same_with_plain_transformers(project, tmp_path):
    """`kocap export` writes a folder plain transformers loads; the code its README shows, run as written on
    a clip, prints the caption `kocap caption` gives for it (merged weights, template, frames, decoding)."""
    config = _export_and_caption_plainly(project, tmp_path, 1)
    assert config["model_type"] == "llava_next_video" and "quantization_config" not in config


def _export_and_caption_plainly(project: Path, tmp_path: Path, version: int) -> dict:
    """Export a version, run its README's code on a clip, check it prints `kocap caption`'s caption;
    returns the exported config."""
    out, uri = tmp_path / "exported", f"models:/kocap/{version}"
    said = _sh([sys.executable, "-m", "kocap.cli", "export", str(out), "--model", uri], project).stdout
    assert uri in said and json.loads((out / "kocap.json").read_text(encoding="utf-8"))["num_frames"] == 8
    readme = (out / "README.md").read_text(encoding="utf-8")
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert not any(f"{how} {pkg}" in code for how in ("import", "from") for pkg in ("kocap", "peft"))
    clip = next((project / "data/raw").rglob("*.mp4"))
    (tmp_path / "plain.py").write_text(code.replace('"clip.mp4"', repr(str(clip))), encoding="utf-8")
    plain = _sh([sys.executable, str(tmp_path / "plain.py")], tmp_path).stdout.strip().splitlines()[-1]
    served = _sh([sys.executable, "-m", "kocap.cli", "caption", str(clip), "--model", uri], project)
    assert plain == served.stdout.strip().split("\t", 1)[1] and plain
    return json.loads((out / "config.json").read_text(encoding="utf-8"))


def _long_clip(seconds: int) -> bytes:
    """A valid mp4 of `seconds` at 1 fps (tiny frames): a two-hour clip in a few hundred kB."""
    import numpy as np

    from kocap.data.video import encode_mp4

    return encode_mp4(np.zeros((seconds, 32, 32, 3), np.uint8), fps=1)


def test_the_served_model_is_a_narrow_surface(project):
    """Bytes in, captions out; paths are not read (and a probe cannot tell which files exist); media
    limits as in training; one bad item never fails the batch; refusals are kocap's 400 without a trace."""
    import base64
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }
    env.pop("KOCAP_SERVE_ROOT", None)
    server = subprocess.Popen(
        [
            str(bin_dir / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/kocap@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ask(columns, rows, body=None):
        body = body or json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=300).read())["predictions"]

    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(1)
        clip = next((project / "data/raw").rglob("*.mp4"))
        b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
        answer = ask(
            ["video_b64"],
            [[b64(clip.read_bytes())], ["not base64 at all!"], [b64(b"just text")], [b64(_long_clip(7200))]],
        )
        assert answer[0]["caption"] and answer[0]["error"] == ""
        assert "not valid base64" in answer[1]["error"] and "not a readable video" in answer[2]["error"]
        assert "duration 7200.0 s outside" in answer[3]["error"]  # validate.max_duration_s, as in training
        assert all("/tmp" not in a["error"] for a in answer)
        probes = ask(["video_path"], [["/root/.ssh/id_rsa"], ["/root/.bashrc"], ["x" * 100_000], [str(clip)]])
        assert len({p["error"] for p in probes[:2]}) == 1 and "not read by this server" in probes[0]["error"]
        assert all(p["caption"] == "" and p["error"] for p in probes)  # a 100,000-character path fails only itself
        (scalar,) = ask(None, None, b'{"inputs": "ok.mp4"}')  # once a 400 with the project's paths in a trace
        assert scalar["caption"] == "" and "not read by this server" in scalar["error"]
        for rows, message in (([], "no videos given"), ([[b64(b"x")]] * 65, "at most 64")):
            with pytest.raises(urllib.error.HTTPError) as refused:
                ask(["video_b64"], rows)
            body = refused.value.read().decode()
            assert refused.value.code == 400 and message in body
            assert "Traceback" not in body and "stack_trace" not in body and str(project) not in body
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_second_run_with_nothing_changed_registers_nothing_new(project):
    before = len(_mlflow(project).search_model_versions("name='kocap'"))
    summary, _ = _kocap(project)
    assert all(not v["ran"] for k, v in summary.items() if k != "pushed_files")
    assert len(_mlflow(project).search_model_versions("name='kocap'")) == before


def test_dvc_repro_then_flow_finds_everything_up_to_date(project):
    write_overrides(project / "params.yaml", ["data.sample.num_clips=32"])
    assert "Running stage 'ingest'" in _dvc(project, "repro").stdout
    summary, _ = _kocap(project)
    assert summary["ingest"]["ran"] is False  # DVC says up to date: skipped without running
    summary, logs = _kocap(project)
    assert "Cached" in logs and summary["ingest"]["ran"] is False
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}


def test_overrides_on_the_command_line_are_recorded_for_dvc(project):
    summary, _ = _kocap(project, "data.sample.num_clips=40")
    assert summary["ingest"]["ran"] is True
    assert summary["ingest"]["result"]["downloaded"] and len(summary["ingest"]["result"]["downloaded"]) < 8
    assert "num_clips: 40" in (project / "params.yaml").read_text(encoding="utf-8")
    assert "num_clips: 40" in (project / "dvc.lock").read_text(encoding="utf-8")
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}


def test_a_second_run_or_a_stage_in_the_same_workspace_stops_with_a_clear_message(project):
    from kocap.workspace import exclusive

    lock_before = (project / "dvc.lock").read_text(encoding="utf-8")
    params_before = (project / "params.yaml").read_text(encoding="utf-8")
    with exclusive(project):  # a run in progress
        env = {**os.environ, "PREFECT_HOME": str(project / ".prefect")}
        proc = subprocess.run(
            [sys.executable, "-m", "kocap.cli", "run", "stage2.epochs=2"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        registered = (project / "reports/register.json").stat().st_mtime_ns
        stage = subprocess.run(  # the `dvc repro` path: a stage beside a run would register a second version
            [sys.executable, "-m", "kocap.cli", "stage", "register"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 2 and "another kocap run holds" in proc.stderr and "--wait" in proc.stderr
    assert (project / "params.yaml").read_text(encoding="utf-8") == params_before  # the override was not written
    assert (project / "dvc.lock").read_text(encoding="utf-8") == lock_before
    assert stage.returncode == 2 and "another kocap run holds" in stage.stderr
    assert (project / "reports/register.json").stat().st_mtime_ns == registered


def test_two_runs_started_at_once_queue_and_leave_consistent_outputs(project):
    env = project_env(project)  # as every scratch command: the session's Prefect server, no temporary ones
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "kocap.cli", "run", "--wait", "900", f"eval.seed={seed}"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (11, 12)
    ]
    outs = [r.communicate(timeout=1200) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    for out, _ in outs:  # each ran its own evaluation, one after the other
        assert json.loads(out[out.index("{") : out.rindex("}") + 1])["evaluate"]["ran"] is True
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}  # outputs match the params that won last


def test_outputs_restore_from_the_remote(project):
    shutil.rmtree(project / "data" / "raw")
    shutil.rmtree(project / ".dvc" / "cache")
    _dvc(project, "pull")
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}


def test_the_preference_stage_trains_on_the_models_own_captions_and_dvc_agrees(project):
    """prefer.enabled: pairs of the stage-2 model's own sampled captions, scored against the references;
    DPO on them; evaluation and the registered version take the DPO adapter, lineage says so; stage 2 is
    reused, not retrained; `dvc repro` then has nothing to do."""
    import hashlib

    import mlflow
    import pandas as pd

    if not (project / "dvc.lock").exists():  # run alone (-k): the module's earlier tests trained stage 2
        _kocap(project)
    overrides = ["prefer.enabled=true", "prefer.max_clips=12", "prefer.candidates=3", "prefer.epochs=1"]
    overrides += ["prefer.video_weight=1.0"]  # mDPO's conditional term: the chosen on another clip's video too
    overrides += ["prefer.pairs_per_clip=2"]  # best vs worst, and the next widest gap of the same candidates
    overrides += ["eval.max_new_tokens=auto"]  # whole captions to rank (48 tokens would cut every one alike)
    summary, _ = _kocap(project, *overrides)
    assert all(summary[s]["ran"] is True for s in ("prefer", "evaluate", "register")) and not summary["finetune"]["ran"]
    pairs = pd.read_parquet(project / "data/preferences.parquet")
    assert 0 < len(pairs) <= 24 and (pairs.chosen != pairs.rejected).all() and (pairs["rank"] <= 1).all()
    assert pairs.groupby("sample_id")["rank"].min().eq(0).all() and pairs["rank"].eq(1).any()
    assert pairs.groupby("sample_id")["heldout"].nunique().eq(1).all()  # a clip's pairs are held out together
    assert (pairs.score_chosen - pairs.score_rejected >= 0.05).all() and pairs.why.str.startswith("primary").all()
    assert pairs[["ref_chosen", "ref_rejected", "ref_chosen_other"]].lt(0).all().all()  # whole captions' log-probs
    assert (pairs.ref_chosen != pairs.ref_chosen_other).all()  # the same caption on another clip's video
    report = json.loads((project / "reports/prefer.json").read_text(encoding="utf-8"))
    assert report["steps"] > 0 and report["heldout_preference_accuracy_before"] == 0.5  # policy == reference
    blind = report["heldout_preference_accuracy_other_videos"]  # the held-out pairs on other clips' videos
    assert (blind is None) == (report["heldout_pairs"] == 0) and (blind is None or 0.0 <= blind <= 1.0)
    own = report["heldout_own_video_preferred"]  # chosen on its own clip rewarded over on another's video
    assert (own is None) == (report["heldout_pairs"] == 0) and report["video_weight"] == 1.0
    assert report["heldout_clips"] == pairs[pairs.heldout].sample_id.nunique() and report["pairs_per_clip"] == 2
    client = _mlflow(project)
    latest = max(client.search_model_versions("name='kocap'"), key=lambda v: int(v.version))
    assert latest.tags["prefer"].startswith(f"DPO on {len(pairs)} pairs") and "video term 1.0" in latest.tags["prefer"]
    assert latest.tags["dvc.models/prefer"] in (project / "dvc.lock").read_text(encoding="utf-8")
    served = Path(mlflow.artifacts.download_artifacts(f"models:/kocap/{latest.version}"))

    def md5(folder: Path) -> str:
        return hashlib.md5((folder / "adapter_model.safetensors").read_bytes()).hexdigest()

    (adapter,) = {p.parent for p in served.rglob("adapter_model.safetensors")}
    assert md5(adapter) == md5(project / "models/prefer/adapter") != md5(project / "models/finetune/adapter")
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}
    assert "Running stage" not in _dvc(project, "repro").stdout
    write_overrides(project / "params.yaml", ["eval.max_new_tokens=48"])  # the module's later runs: quick again


def test_compare_scores_every_version_on_the_current_clips_and_reproduces_evaluation(project):
    """`kocap compare`: each complete version re-captions today's validation clips through its registered
    model; the newest one, evaluated on these clips, gets exactly its evaluation's figures; a second call
    reads the cache and says the same."""
    if not (project / "dvc.lock").exists():  # run alone (-k)
        _kocap(project)
    versions = _mlflow(project).search_model_versions("name='kocap'")
    first = _sh([sys.executable, "-m", "kocap.cli", "compare"], project).stdout
    report = json.loads((project / "reports/compare.json").read_text(encoding="utf-8"))
    rows = {r["version"]: r for r in report["versions"]}
    assert set(rows) == {int(v.version) for v in versions if v.tags.get("kocap.state") == "complete"}
    metrics = json.loads((project / "reports/metrics.json").read_text(encoding="utf-8"))
    newest = rows[max(rows)]
    assert newest["primary"] == pytest.approx(metrics["primary"], abs=1e-9)
    assert newest["attribute_accuracy"] == pytest.approx(metrics["attribute_accuracy"], abs=1e-9)
    assert newest["unique_share"] == pytest.approx(metrics["unique_share"], abs=1e-9)
    assert newest["family"] == "llava-next-video+qwen3" and newest["video_tokens"] == 128
    assert report["clips"] == metrics["samples"] and all(r["tokens_per_s"] > 0 for r in rows.values())
    assert all(f"v{n}" + "".join(f" @{a}" for a in r["aliases"][:1]) in first for n, r in rows.items())
    assert any(r["aliases"] for r in rows.values())  # the champion, or the challenger when none won yet
    page = (project / "reports/compare.html").read_text(encoding="utf-8")
    first_clip = page[page.index(report["sample_ids"][0]) : page.index(report["sample_ids"][1])]
    assert "data:image/png;base64," in first_clip and html.escape(newest["captions"][0]) in first_clip
    assert _sh([sys.executable, "-m", "kocap.cli", "compare"], project).stdout == first


def test_a_zero_shot_version_measures_the_base_with_stage_1s_projector(project):
    """`stage2.enabled=false`: nothing trains; the registered adapter is the identity LoRA (every B zero)
    around stage 1's projector, the version's lineage says zero-shot, and DVC agrees. It runs last on the
    module's project: stage 2 stays off there."""
    import mlflow
    import torch
    from safetensors.torch import load_file

    _kocap(project, "stage2.enabled=false", "prefer.enabled=false")
    report = json.loads((project / "reports/finetune.json").read_text(encoding="utf-8"))
    assert report["skipped"] and report["steps"] == 0 and report["projector"] == "stage 1"
    client = _mlflow(project)
    latest = max(client.search_model_versions("name='kocap'"), key=lambda v: int(v.version))
    assert latest.tags["stage2"] == "skipped: zero-shot (identity LoRA, stage 1 projector)"
    served = Path(mlflow.artifacts.download_artifacts(f"models:/kocap/{latest.version}"))
    (weights,) = served.rglob("adapter_model.safetensors")
    adapter = load_file(weights)
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and all(not t.any() for t in lora_b)
    aligned = load_file(project / "models/align/projector.safetensors")
    for name, tensor in aligned.items():
        (key,) = [k for k in adapter if k.endswith(f"multi_modal_projector.{name}")]
        assert torch.equal(adapter[key], tensor), key
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}


def test_a_second_family_runs_the_lifecycle_and_is_compared_beside_the_first(project, tmp_path):
    """`model.preset=tiny-video-llava`: the Video-LLaVA family (two towers, CLS kept: 8 x 65 video tokens)
    through every stage of the same project; its version is tagged with its family, `kocap compare` puts
    it beside the LLaVA-NeXT-Video versions on the same clips, and its export captions as kocap does."""
    summary, _ = _kocap(project, "model.preset=tiny-video-llava", "stage2.enabled=true")
    assert all(summary[s]["ran"] is True for s in ("assemble", "align", "finetune", "evaluate", "register"))
    assert json.loads((project / "models/base/config.json").read_text(encoding="utf-8"))["model_type"] == "video_llava"
    client = _mlflow(project)
    latest = max(client.search_model_versions("name='kocap'"), key=lambda v: int(v.version))
    assert latest.tags["family"] == "video-llava+qwen3" and latest.tags["preset"] == "tiny-video-llava"
    page = (project / "reports/eval.html").read_text(encoding="utf-8")
    assert "video-llava+qwen3 (preset tiny-video-llava), 520 video tokens per clip" in page
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}
    _sh([sys.executable, "-m", "kocap.cli", "compare"], project)
    rows = json.loads((project / "reports/compare.json").read_text(encoding="utf-8"))["versions"]
    tokens = {r["family"]: r["video_tokens"] for r in rows}
    assert tokens == {"llava-next-video+qwen3": 128, "video-llava+qwen3": 8 * 65}
    config = _export_and_caption_plainly(project, tmp_path, int(latest.version))
    assert config["model_type"] == "video_llava" and "quantization_config" not in config


def test_an_aligned_family_skips_stage_1_and_is_compared_beside_the_others(project, tmp_path):
    """`model.preset=tiny-qwen3-vl`: a Qwen3-VL model (frame pairs, 2x2 merge, DeepStack, M-RoPE) taken as
    pretrained: stage 1 is skipped and says why, in the outputs and the version's lineage; stage 2 trains
    LoRA on its LLM alone; `kocap compare` shows it beside the other families, and its export (Qwen's patch
    layout written out, no torchvision) captions as kocap does."""
    summary, _ = _kocap(project, "model.preset=tiny-qwen3-vl", "stage2.enabled=true")
    assert all(summary[s]["ran"] is True for s in ("assemble", "finetune", "evaluate", "register"))
    align = json.loads((project / "reports/align.json").read_text(encoding="utf-8"))
    assert align["skipped"] is True and "qwen3-vl family is pretrained" in align["reason"]
    assert json.loads((project / "models/base/config.json").read_text(encoding="utf-8"))["model_type"] == "qwen3_vl"
    client = _mlflow(project)
    latest = max(client.search_model_versions("name='kocap'"), key=lambda v: int(v.version))
    assert latest.tags["family"] == "qwen3-vl" and latest.tags["stage1"].startswith("skipped: the qwen3-vl family")
    assert "qwen3-vl (preset tiny-qwen3-vl), 64 video tokens per clip" in (project / "reports/eval.html").read_text(
        encoding="utf-8"
    )
    assert json.loads(_dvc(project, "status", "--json").stdout) == {}
    _sh([sys.executable, "-m", "kocap.cli", "compare"], project)
    rows = json.loads((project / "reports/compare.json").read_text(encoding="utf-8"))["versions"]
    tokens = {r["family"]: r["video_tokens"] for r in rows}
    assert tokens["qwen3-vl"] == 4 * 16  # beside the versions of the earlier tests' families
    assert set(tokens) <= {"llava-next-video+qwen3", "video-llava+qwen3", "qwen3-vl"}
    config = _export_and_caption_plainly(project, tmp_path, int(latest.version))
    assert config["model_type"] == "qwen3_vl" and "quantization_config" not in config


def test_the_key_can_come_from_a_prefect_secret_block(tmp_path):
    from prefect.blocks.system import Secret
    from prefect.testing.utilities import prefect_test_harness

    from kocap.env import RunEnv

    with prefect_test_harness(server_startup_timeout=120):
        Secret(value="block-key-551").save("aihub-apikey", overwrite=True)
        assert RunEnv({}).aihub_key().reveal() == "block-key-551"
        assert RunEnv({"AIHUB_APIKEY": "env-wins"}).aihub_key().reveal() == "env-wins"
