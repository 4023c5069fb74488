"""The promotion gate: a win, a loss, a collapse, failed validation, no grounding."""
import pytest

from kocap.config import load_config
from kocap.registry.register import gate

CFG = load_config("/nonexistent", ["registry.min_improvement=0.05", "registry.min_unique_share=0.5"])
GOOD = {"primary": 1.30, "primary_metric": "cider", "unique_share": 0.9, "grounding": 0.4}
VALID = {"reject_frac": 0.01, "kept_by_split": {"train": 200, "val": 30}}


def test_a_clear_win_is_promoted():
    promote, reasons = gate(GOOD, VALID, champion=1.20, cfg=CFG)
    assert promote and "beats the champion's 1.2000" in reasons[0]
    assert gate(GOOD, VALID, champion=None, cfg=CFG) == (True, ["cider 1.3000 (first champion)"])


@pytest.mark.parametrize("metrics, validation, champion, why", [
    (GOOD, VALID, 1.28, "does not beat the champion's 1.2800 by 0.05"),
    ({**GOOD, "unique_share": 0.1}, VALID, None, "mode collapse"),
    ({**GOOD, "grounding": -0.02}, VALID, None, "captions do not depend on the video"),
    (GOOD, {"reject_frac": 0.5, "kept_by_split": {"train": 100, "val": 10}}, None, "validation did not pass"),
    (GOOD, {"reject_frac": 0.0, "kept_by_split": {"train": 100, "val": 0}}, None, "validation did not pass"),
])
def test_a_losing_or_unsafe_challenger_never_replaces_the_champion(metrics, validation, champion, why):
    promote, reasons = gate(metrics, validation, champion, CFG)
    assert not promote and any(why in r for r in reasons)


def test_every_failed_condition_is_listed():
    _, reasons = gate({**GOOD, "unique_share": 0.1, "grounding": 0.0}, VALID, 2.0, CFG)
    assert len(reasons) == 3
