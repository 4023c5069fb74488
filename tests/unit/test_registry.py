"""The promotion gate: a win beyond the noise, a loss, a gain inside the noise, a collapse, failed
validation, no grounding; the paired bootstrap on its own."""

import numpy as np
import pytest

from kocap.config import load_config
from kocap.registry.gate import Comparison, gate, paired_lower_bound

CFG = load_config("/nonexistent", ["registry.min_improvement=0.05", "registry.min_unique_share=0.5"])
GOOD = {"primary": 1.30, "primary_metric": "cider", "unique_share": 0.9, "grounding": 0.4}
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
