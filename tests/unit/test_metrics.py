"""Korean caption metrics: pycocoevalcap on the same morpheme tokens, diversity and grounding."""
import shutil

import pytest

from kocap.evaluate.metrics import caption_metrics, diversity, morphemes, most_frequent_caption
from kocap.evaluate.stage import score

REFS = ["맑은 날 도시의 풍경입니다. 빨간색 자동차가 오른쪽으로 이동합니다.",
        "어두운 밤 해변의 모습입니다. 파란색 공이 멈춰 있습니다.",
        "흐린 저녁 자연 풍경입니다. 카메라가 천천히 확대됩니다.",
        "비가 내리는 낮의 도시입니다. 노란색 사람이 왼쪽으로 걸어갑니다."]


def test_morphemes_split_particles_from_nouns():
    assert morphemes("자동차가 이동합니다").split()[:2] == ["자동차", "가"]


def test_metrics_equal_pycocoevalcap_on_the_same_morphemes():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    preds = ["맑은 날 도시 풍경입니다. 빨간색 자동차가 왼쪽으로 이동합니다.", REFS[1], "흐린 저녁입니다.", "도시입니다."]
    gts = {i: [morphemes(r)] for i, r in enumerate(REFS)}
    res = {i: [morphemes(p)] for i, p in enumerate(preds)}
    ours = caption_metrics([[r] for r in REFS], preds, meteor=False)
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert ours["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert ours["bleu_4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    assert 0 < ours["cider"] and ours["bleu_1"] > ours["bleu_4"]


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java; without it the metric is skipped")
def test_meteor_on_korean_morphemes():
    perfect = caption_metrics([[r] for r in REFS], REFS)["meteor"]
    partial = caption_metrics([[r] for r in REFS], [REFS[0]] * 4)["meteor"]
    assert perfect > 0.9 and partial < perfect


def test_diversity_catches_mode_collapse():
    collapsed = diversity([REFS[0]] * 4)
    varied = diversity(REFS)
    assert collapsed["unique_share"] == 0.25 and varied["unique_share"] == 1.0
    assert collapsed["distinct_1"] < varied["distinct_1"] and collapsed["distinct_2"] < varied["distinct_2"]


def test_grounding_is_positive_only_when_captions_follow_the_video():
    refs = [[r] for r in REFS]
    grounded = score(refs, REFS, REFS[1:] + REFS[:1], [REFS[0]] * 4, "cider")
    blind = score(refs, [REFS[0]] * 4, [REFS[0]] * 4, [REFS[0]] * 4, "cider")
    assert grounded["grounding"] > 1 and blind["grounding"] == 0
    assert grounded["baseline_most_frequent_cider"] == blind["primary"]
    assert most_frequent_caption(["a", "b", "b"]) == "b"
