"""Korean caption metrics: pycocoevalcap on the same morpheme tokens, diversity, grounding, sentence-level
scores, attribute accuracy and the placement of a score."""

import shutil
from dataclasses import replace

import numpy as np
import pytest

from kocap.config import EvalParams
from kocap.evaluate.evaluation import score
from kocap.evaluate.metrics import (
    PUBLISHED_BASELINE,
    caption_metrics,
    clip_scores,
    diversity,
    morphemes,
    most_frequent_caption,
    sentence_scores,
    sentences,
)
from kocap.evaluate.placement import placement
from kocap.sample.captions import describe
from kocap.sample.facts import attribute_accuracy
from kocap.sample.scene import draw_scene

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java (a JRE), absent here")

REFS = [
    "맑은 날 도시의 풍경입니다. 빨간색 자동차가 오른쪽으로 이동합니다.",
    "어두운 밤 해변의 모습입니다. 파란색 공이 멈춰 있습니다.",
    "흐린 저녁 자연 풍경입니다. 카메라가 천천히 확대됩니다.",
    "비가 내리는 낮의 도시입니다. 노란색 사람이 왼쪽으로 걸어갑니다.",
]


def test_morphemes_split_particles_from_nouns():
    assert morphemes("자동차가 이동합니다").split()[:2] == ["자동차", "가"]


def test_metrics_equal_pycocoevalcap_on_the_same_morphemes():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    preds = [
        "맑은 날 도시 풍경입니다. 빨간색 자동차가 왼쪽으로 이동합니다.",
        REFS[1],
        "흐린 저녁입니다.",
        "도시입니다.",
    ]
    gts = {i: [morphemes(r)] for i, r in enumerate(REFS)}
    res = {i: [morphemes(p)] for i, p in enumerate(preds)}
    ours = caption_metrics([[r] for r in REFS], preds, meteor=False)
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert ours["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert ours["bleu_4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    assert 0 < ours["cider"] and ours["bleu_1"] > ours["bleu_4"]


@needs_java
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


def _paragraphs(n: int, seed: int = 7):
    """(scene, reference paragraph) pairs from the sample generator: AI-Hub-length descriptions."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = draw_scene(rng)
        out.append((scene, describe(scene, rng)))
    return out


def _wrong(scene):
    """The same scene with its subject, colour, time and motion changed."""
    flip = lambda value, a, b: b if value == a else a  # noqa: E731
    return replace(
        scene,
        obj=flip(scene.obj, "공", "사람"),
        color=flip(scene.color, "보라색", "흰색"),
        time=flip(scene.time, "밤", "낮"),
        motion=flip(scene.motion, "왼쪽", "오른쪽"),
    )


@needs_java
def test_a_longer_but_worse_paragraph_does_not_win_on_the_primary_metric():
    """Dropping the last two sentences (right but short) must beat a longer paragraph with wrong facts."""
    assert EvalParams().primary_metric == "meteor"
    clips = _paragraphs(8)
    refs = [[ref] for _, ref in clips]
    short = [" ".join(sentences(ref)[:-2]) for _, ref in clips]
    longer_wrong = []
    for i, (scene, ref) in enumerate(clips):
        tries = (describe(_wrong(scene), np.random.default_rng([99, i, k])) for k in range(200))
        longer_wrong.append(next(t for t in tries if len(t) > len(ref)))
    primary = EvalParams().primary_metric
    right, wrong = clip_scores(refs, short, primary), clip_scores(refs, longer_wrong, primary)
    assert right[0] > wrong[0] + 0.1 and all(a > b for a, b in zip(right[1], wrong[1]))
    assert (
        attribute_accuracy([r for _, r in clips], short)["mean"]
        > attribute_accuracy([r for _, r in clips], longer_wrong)["mean"]
    )


def test_sentence_scores_match_sentences_in_any_order():
    ref = "맑은 날 도시의 풍경입니다. 빨간색 자동차가 오른쪽으로 이동합니다. 카메라는 고정되어 있습니다."
    reordered = "카메라는 고정되어 있습니다. 맑은 날 도시의 풍경입니다. 빨간색 자동차가 오른쪽으로 이동합니다."
    half = "맑은 날 도시의 풍경입니다."
    assert sentence_scores([ref], [reordered]) == {
        "sentence_recall": 1.0,
        "sentence_precision": 1.0,
        "sentence_f1": 1.0,
    }
    partial = sentence_scores([ref], [half])
    assert partial["sentence_precision"] == 1.0 and partial["sentence_recall"] < 0.7


def test_attribute_accuracy_reads_the_generators_facts():
    clips = _paragraphs(12)
    refs = [ref for _, ref in clips]
    assert attribute_accuracy(refs, refs)["mean"] == 1.0
    wrong = attribute_accuracy(refs, [describe(_wrong(s), np.random.default_rng(i)) for i, (s, _) in enumerate(clips)])
    assert wrong["obj"] == wrong["color"] == wrong["time"] == wrong["motion"] == 0.0
    assert wrong["row"] == wrong["camera"] == 1.0
    assert attribute_accuracy(refs, [""] * 12)["mean"] == 0.0  # saying nothing states nothing


def test_the_placement_puts_the_score_beside_its_reference_points():
    metrics = {
        "primary_metric": "meteor",
        "primary": 0.41,
        "samples": 30,
        "baseline_most_frequent_meteor": 0.2,
        "shuffled_meteor": 0.25,
        "cut_share": 0.1,
        "max_new_tokens": 500,
    }
    comparison = {"champion_version": "3", "champion": "0.38", "challenger": "0.41", "clips": "30", "val_set": "ab12"}
    rows = {r["what"]: r for r in placement(metrics, comparison)}
    assert rows["this model"]["score"] == 0.41 and rows["most frequent training caption"]["score"] == 0.2
    assert rows["this model, shuffled videos"]["score"] == 0.25 and rows["champion v3, same clips"]["score"] == 0.38
    assert (
        rows[PUBLISHED_BASELINE["label"]]["score"] == 0.3052
        and "its own data" in rows[PUBLISHED_BASELINE["label"]]["note"]
    )
    assert rows["captions cut by the generation budget"]["score"] == 0.1
    other = {
        r["what"]: r
        for r in placement(
            {**metrics, "primary_metric": "rouge_l", "baseline_most_frequent_rouge_l": 0.2, "shuffled_rouge_l": 0.25}
        )
    }
    assert other[PUBLISHED_BASELINE["label"]]["score"] is None  # never set beside a number of another metric
    assert other["current champion, same clips"]["score"] is None
    first = {r["what"]: r for r in placement(metrics, None, registered=True)}
    assert "no champion" in first["current champion, same clips"]["note"]


def test_the_report_opens_with_the_attribute_chart_and_marks_each_clips_facts(tmp_path):
    """reports/eval.html on the sample: bars per attribute for the model and both controls (their lengths
    are the figures), and under each clip's frames the facts its caption got right (✓) or wrong (✗)."""
    import pandas as pd

    from kocap.evaluate.evaluation import fact_scores
    from kocap.evaluate.report import report_html
    from kocap.sample.facts import read_facts

    rng = np.random.default_rng(3)
    scenes = [draw_scene(rng) for _ in range(6)]
    refs = [describe(s, rng) for s in scenes]
    preds = refs[:5] + [describe(_wrong(scenes[5]), rng)]  # the last clip: subject, colour, time, motion wrong
    metrics = {
        "primary_metric": "rouge_l",
        "primary": 0.5,
        "rouge_l": 0.5,
        "shuffled_rouge_l": 0.3,
        "baseline_most_frequent_rouge_l": 0.2,
        "samples": 6,
        **fact_scores(refs, preds, refs[::-1], [refs[0]] * 6),
    }
    (tmp_path / "data/frames/clips").mkdir(parents=True)
    np.save(tmp_path / "data/frames/clips/s.npy", np.zeros((6, 2, 8, 8, 3), np.uint8))
    val = pd.DataFrame({"sample_id": [f"c{i}" for i in range(6)], "shard": "clips/s.npy", "offset": range(6)})
    table = pd.DataFrame({"sample_id": val["sample_id"], "reference": refs, "prediction": preds})
    page = report_html(tmp_path, val, table, metrics, 6, "video-llava+qwen3 (preset tiny-video-llava), 520 video")
    assert page.index("<b>model</b> video-llava+qwen3 (preset tiny-video-llava)") < page.index("<svg")
    assert page.index("<svg") < page.index("All metrics")  # the chart opens the page
    width = 520 * metrics["attribute_color"]
    assert f"width='{width:.1f}' height='8' fill='#2b6cb0'" in page
    assert f"width='{520 * metrics['baseline_most_frequent_attribute_accuracy']:.1f}'" in page
    last = page[page.index("<h3>c5</h3>") :]
    truth, said = read_facts(refs[5]), read_facts(preds[5])
    wrong = [f for f, v in truth.items() if v is not None and said[f] != v]
    assert {"obj", "color", "time"} <= set(wrong) and last.count("✗") == len(wrong)
    assert f"color: {truth['color']} (said {said['color']})" in last
    assert page[page.index("<h3>c0</h3>") : page.index("<h3>c1</h3>")].count("✓") == len(
        [v for v in read_facts(refs[0]).values() if v is not None]
    )


@pytest.mark.parametrize("n", [2, 3, 42, 203])
def test_the_shuffled_video_control_never_gives_a_clip_its_own_video(n):
    """evaluation's control (and the preference stage's): every clip captioned from another clip's video,
    each video used once, the same for the same seed. A plain permutation leaves ~1 clip its own video."""
    from kocap.config import load_config
    from kocap.evaluate.predict import _order

    cfg = load_config(overrides=["eval.seed=7"])
    order = _order(cfg, n, "shuffled")
    assert (order != np.arange(n)).all() and sorted(order) == list(range(n))
    assert np.array_equal(order, _order(cfg, n, "shuffled")) and np.array_equal(_order(cfg, n, "model"), np.arange(n))
