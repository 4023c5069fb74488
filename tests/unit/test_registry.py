"""The promotion gate: a win beyond the noise, a loss, a gain inside the noise, a collapse, failed
validation, no grounding; the paired bootstrap on its own."""

import numpy as np
import pytest

from kocap.config import load_config
from kocap.registry.gate import Comparison, gate, paired_lower_bound

CFG = load_config("/nonexistent", ["registry.min_improvement=0.05", "registry.min_unique_share=0.5"])
GOOD = {"primary": 1.30, "primary_metric": "cider", "unique_share": 0.9, "grounding": 0.4, "samples": 30}
VALID = {"reject_frac": 0.01, "kept_by_split": {"train": 200, "val": 30}}


def _vs(lower: float) -> Comparison:
    return Comparison(
        champion_version="3",
        metric="cider",
        champion=1.20,
        challenger=1.30,
        mean_gain=0.1,
        lower95=lower,
        clips=30,
        val_set="abc",
    )


def test_a_clear_win_on_the_same_clips_is_promoted():
    promote, reasons = gate(GOOD, VALID, _vs(0.08), cfg=CFG)
    assert promote and "beats champion v3's 1.2000" in reasons[0] and "same 30 clips" in reasons[0]
    assert gate(GOOD, VALID, None, cfg=CFG) == (True, ["cider 1.3000 (first champion)"])


@pytest.mark.parametrize(
    "metrics, validation, comparison, why",
    [
        (GOOD, VALID, _vs(0.02), "does not exceed 0.05"),  # better on average, but within the noise
        (GOOD, VALID, _vs(-0.3), "does not exceed 0.05"),
        ({**GOOD, "unique_share": 0.1}, VALID, None, "mode collapse"),
        ({**GOOD, "grounding": -0.02}, VALID, None, "captions do not depend on the video"),
        (GOOD, {"reject_frac": 0.5, "kept_by_split": {"train": 100, "val": 10}}, None, "validation did not pass"),
        (GOOD, {"reject_frac": 0.0, "kept_by_split": {"train": 100, "val": 0}}, None, "validation did not pass"),
    ],
)
def test_a_losing_or_unsafe_challenger_never_replaces_the_champion(metrics, validation, comparison, why):
    promote, reasons = gate(metrics, validation, comparison, CFG)
    assert not promote and any(why in r for r in reasons)


NAN = float("nan")


@pytest.mark.parametrize(
    "metrics, lower, why",
    [
        ({**GOOD, "primary": NAN}, 0.08, "not a finite number: cider = nan"),
        ({**GOOD, "unique_share": NAN}, None, "unique-caption share nan"),
        ({**GOOD, "grounding": NAN}, None, "grounding nan is not positive"),
        (GOOD, NAN, "does not exceed 0.05"),  # `nan <= 0.05` is false: this promoted before
        ({**GOOD, "samples": 5}, None, "5 validation clips, fewer than registry.min_clips = 20"),
        ({k: v for k, v in GOOD.items() if k != "samples"}, None, "0 validation clips"),
        ({k: v for k, v in GOOD.items() if k != "grounding"}, None, "grounding None is not positive"),
    ],
)
def test_a_nan_a_missing_figure_or_a_tiny_validation_set_keeps_the_challenger(metrics, lower, why):
    promote, reasons = gate(metrics, VALID, None if lower is None else _vs(lower), CFG)
    assert not promote and any(why in r for r in reasons), reasons


def test_bounds_a_user_would_accept_on_the_registry_params():
    for bad in ("registry.min_improvement=inf", "registry.min_improvement=nan", "registry.min_clips=0"):
        with pytest.raises(ValueError):
            load_config("/nonexistent", [bad])


def test_every_failed_condition_is_listed():
    _, reasons = gate({**GOOD, "unique_share": 0.1, "grounding": 0.0}, VALID, _vs(-1.0), CFG)
    assert len(reasons) == 3


def test_the_paired_bootstrap_separates_a_real_gain_from_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.5, 40)
    assert paired_lower_bound(noise + 0.4) > 0.1  # a consistent gain: bounded away from zero
    assert paired_lower_bound(noise) < 0  # no gain: the bound straddles zero
    assert paired_lower_bound(np.zeros(40)) == 0.0  # identical captions gain exactly nothing
    assert paired_lower_bound(np.array([1.0])) == float("-inf")  # one clip cannot measure noise
    assert paired_lower_bound(noise, seed=1) == paired_lower_bound(noise, seed=1)  # seeded: repeatable


def test_a_reason_holding_a_semicolon_stays_one_reason():
    import json

    from kocap.registry.register import reasons_of

    reasons = ["manual override: checked clips 1; 2 and 3 by hand", "second"]
    assert reasons_of({"kocap.reasons": "; ".join(reasons), "kocap.reasons_json": json.dumps(reasons)}) == reasons
    assert reasons_of({"kocap.reasons": "a; b"}) == ["a", "b"]  # versions registered before the JSON tag


def test_the_champions_captions_are_cached_by_its_run_and_the_budget_not_its_number():
    from types import SimpleNamespace

    from kocap.registry.champion import cache_path

    old_v1 = SimpleNamespace(name="kocap", version="1", run_id="run-a")
    new_v1 = SimpleNamespace(name="kocap", version="1", run_id="run-b")  # after `make clean`: another model
    assert cache_path(old_v1, "set", 300) != cache_path(new_v1, "set", 300)
    assert cache_path(old_v1, "set", 300) != cache_path(old_v1, "set", 400)  # captioned as the challenger was


def test_two_registrations_of_the_same_inputs_leave_one_version(tmp_path):
    """Two workspaces on one registry registering the same inputs at once: each finds nothing, each
    creates; after creating, the later one finds the earlier version and withdraws its own."""
    from mlflow import MlflowClient

    from kocap.registry.register import KEY, find_version, settle

    client, name = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"), "kocap"
    client.create_registered_model(name)
    (tmp_path / "model").mkdir()
    first, second = (
        client.create_model_version(name, str(tmp_path / "model"), tags={KEY: "same-inputs"}) for _ in range(2)
    )
    assert settle(client, name, "same-inputs", first).version == first.version  # the earliest stays
    kept = settle(client, name, "same-inputs", second)
    assert kept.version == first.version
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == [first.version]
    assert find_version(client, name, "same-inputs").version == first.version


def test_completing_an_interrupted_registration_judges_it_against_the_champion_of_now(tmp_path):
    """v3 was decided champion against v1 and killed before the alias moved; v4 then became champion. The
    rerun completing v3 must gate it against v4, not move the alias back (probed on the old code: it did,
    with the reason "first champion"). Against an unchanged champion the decision is applied."""
    from mlflow import MlflowClient

    from kocap.registry.register import current_champion, pending_decision

    client, name = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"), "kocap"
    client.create_registered_model(name)
    (tmp_path / "model").mkdir()
    complete = {"kocap.state": "complete", "metric.primary": "0.3"}
    for _ in range(4):
        client.create_model_version(name, str(tmp_path / "model"), tags=complete)
    client.set_registered_model_alias(name, "champion", "1")
    killed = {"kocap.decision": "champion", "kocap.judged_against": "1", "kocap.state": "incomplete"}
    assert pending_decision(killed, "3", current_champion(client, name)) == "apply"  # v1 still holds
    client.set_registered_model_alias(name, "champion", "4")  # another run (or `kocap promote`) came in between
    assert pending_decision(killed, "3", current_champion(client, name)) == "gate"
    assert pending_decision({**killed, "kocap.judged_against": "4"}, "3", current_champion(client, name)) == "apply"
    lost = {**killed, "kocap.decision": "challenger", "kocap.judged_against": "4"}
    assert pending_decision(lost, "3", current_champion(client, name)) == "done"
    assert pending_decision({}, "3", current_champion(client, name)) == "gate"  # killed before any decision
    assert pending_decision({"kocap.decision": "champion"}, "3", None) == "gate"  # decided before this tag existed
    assert pending_decision({**killed, "kocap.judged_against": "1"}, "4", current_champion(client, name)) == "done"


def test_the_served_model_names_kocaps_pinned_requirements():
    """Given to log_model (MLflow would otherwise load the model in a subprocess to infer them): each of
    kocap's runtime dependencies at the installed version, without a local build tag such as +cpu."""
    import importlib.metadata as md

    from kocap.registry.register import serving_requirements

    pinned = dict(r.split("==") for r in serving_requirements())
    assert {"torch", "transformers", "peft", "bitsandbytes", "mlflow"} <= pinned.keys()
    assert pinned["torch"] == md.version("torch").split("+")[0] and "+" not in "".join(pinned.values())
    assert "pytest" not in pinned  # test extras are not served


def test_a_reassembled_base_is_used_only_when_its_dvc_hash_is_the_recorded_one(tmp_path):
    """Re-assembling from hub ids was not checked: a hub model revised since would have served another
    base under the version's name. `dir_md5` is DVC's own folder hash (checked against `dvc add`), and
    a folder that differs is refused naming the files."""
    import subprocess
    import sys

    import yaml

    from kocap.registry.base_ref import BaseNotFound, dir_md5, verify

    repo, base = tmp_path / "repo", tmp_path / "repo" / "base"
    (base / "sub").mkdir(parents=True)
    (base / "config.json").write_text('{"hidden_size": 8}', encoding="utf-8")
    (base / "sub" / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (base / "tokenizer.json").write_text("한국어 {}\n", encoding="utf-8")
    for cmd in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "add", "-q", "base"],
    ):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    recorded = yaml.safe_load((repo / "base.dvc").read_text())["outs"][0]["md5"]
    md5, files = dir_md5(base)
    assert md5 == recorded
    ref = {"md5": md5, "files": files, "vision": "openai/clip", "llm": "Qwen/Qwen3-8B"}
    verify(base, ref)
    (base / "config.json").write_text('{"hidden_size": 9}', encoding="utf-8")  # the hub model changed
    with pytest.raises(BaseNotFound, match=r"files that differ: \['config.json'\].*pin the preset's sources"):
        verify(base, ref)
    with pytest.raises(BaseNotFound, match=f"not the {md5}"):  # a version registered before files were recorded
        verify(base, {k: v for k, v in ref.items() if k != "files"})


def test_the_compare_page_ranks_versions_and_shows_each_ones_caption_under_the_reference():
    from kocap.registry.compare import compare_html, table

    def version(n, primary, caption, aliases=()):
        return {
            "version": n,
            "aliases": list(aliases),
            "family": "llava-next-video+qwen3",
            "preset": "tiny",
            "primary": primary,
            "attribute_accuracy": 0.5,
            "unique_share": 1.0,
            "video_tokens": 128,
            "tokens_per_s": 100.0,
            "peak_gib": None,
            "captions": [caption, "둘째 <b>"],
        }

    report = {
        "metric": "meteor",
        "clips": 2,
        "validation_set": "abc",
        "sample_ids": ["도시_00001", "도시_00002"],
        "references": ["낮에 촬영한 영상입니다.", "밤"],
        "versions": [version(1, 0.30, "밤에 촬영한 영상입니다.", ["champion"]), version(2, 0.40, "낮에 촬영한 영상")],
    }
    page = compare_html(report, strips=["AAAA"])
    assert page.index("v2") < page.index("v1 @champion")  # best primary first, in the table and per clip
    first_clip = page[page.index("도시_00001") : page.index("도시_00002")]
    assert "base64,AAAA" in first_clip and "밤에 촬영한 영상입니다." in first_clip and "낮에 촬영한 영상" in first_clip
    assert "✓ time: 낮" in first_clip and "✗ time: 낮 (said 밤)" in first_clip  # facts marked per version
    assert "둘째 &lt;b&gt;" in page and "둘째 <b>" not in page  # captions are text, never markup
    assert table(report).splitlines()[1].startswith("v2 ")
