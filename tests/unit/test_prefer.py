"""The preference step's parts (kocap/train/prefer.py): the DPO loss, the sequence log-probabilities the
reference and the policy are scored with, and pairs made from scored candidates."""

import math

import pandas as pd
import pytest
import torch

from kocap.model.presets import video_tokens
from kocap.model.text import encode
from kocap.model.video_lm import embed, sequence_logprobs
from kocap.train.prefer import (
    best_and_worst,
    dpo_loss,
    facts_share,
    heldout,
    other_clips,
    ranked_pairs,
    repeated_share,
    score_captions,
)

from .test_model_build import CAPTIONS, base  # noqa: F401  (the tiny base checkpoint fixture)


def test_the_dpo_loss_equals_the_hand_computed_value():
    # pair 1: chosen gains 1 nat over the reference, rejected loses 1: margin 0.1 * (1 - -1) = 0.2
    # pair 2: the other way round: margin -0.2.  loss = mean(log(1 + e^-0.2), log(1 + e^0.2))
    pc, pr = torch.tensor([-10.0, -12.0], requires_grad=True), torch.tensor([-12.0, -10.0])
    rc, rr = torch.tensor([-11.0, -11.0]), torch.tensor([-11.0, -11.0])
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=0.1)
    expected = (math.log(1 + math.exp(-0.2)) + math.log(1 + math.exp(0.2))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)  # 0.698139
    assert stats["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert stats["preference_accuracy"] == 0.5
    loss.backward()
    assert (pc.grad < 0).all()  # descending the loss raises the chosen caption's log-probability


def test_an_untrained_policy_ranks_at_chance_not_zero():
    same = torch.tensor([-5.0, -7.0, -9.0])
    loss, stats = dpo_loss(same, same - 1, same, same - 1, beta=0.1)  # policy == reference
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert stats == {"reward_margin": 0.0, "preference_accuracy": 0.5}


def test_sequence_logprobs_equal_a_forward_pass_summed_over_the_answer(base):  # noqa: F811
    """The reference log-probabilities DPO stores: the summed log-probability of each answer's tokens
    under the stage-2 model (LoRA and projector as trained), equal to transformers' own forward pass.
    Padding must not leak: captions of two lengths in one batch."""
    from kocap.model.build import add_lora

    _, tok, _, _, model = base
    torch.manual_seed(1)
    model = add_lora(model, 4, 8).eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # a trained adapter: it must be part of what is scored
    n = video_tokens(model.config, 8)
    encoded = [encode(tok, "묘사해주세요.", c, n, 512) for c in (CAPTIONS[0], CAPTIONS[1] + " 끝입니다.")]
    assert len(encoded[0]) != len(encoded[1])
    feats = torch.randn(2, n, model.config.vision_config.hidden_size)
    with torch.no_grad():
        ours = sequence_logprobs(model, encoded, feats, tok.pad_token_id)
        expected = []
        for i, e in enumerate(encoded):
            ids = torch.tensor([e.input_ids])
            logp = model(inputs_embeds=embed(model, ids, feats[i : i + 1])).logits[0].float().log_softmax(-1)
            labels = torch.tensor(e.labels)
            at = (labels[1:] != -100).nonzero()[:, 0]
            expected.append(logp[at, labels[1:][at]].sum())
    assert torch.allclose(ours, torch.stack(expected), atol=1e-4)
    with torch.no_grad(), model.disable_adapter():
        assert not torch.allclose(sequence_logprobs(model, encoded, feats, tok.pad_token_id), ours, atol=1e-3)


REFERENCE = (
    "맑은 날 한낮에 도시의 모습을 담은 영상입니다. 화면에는 빨간색 자동차 두 대가 등장합니다. "
    "자동차들은 왼쪽에서 오른쪽으로 이동합니다."
)


def test_pairs_prefer_the_caption_that_states_the_clip_over_a_repeating_or_cut_one():
    grounded = REFERENCE.replace("등장합니다", "보입니다")
    wrong = "맑은 날 한낮에 도시의 모습을 담은 영상입니다. 화면에는 파란색 공 세 개가 등장합니다."
    looping = "화면에는 파란색 공 세 개가 등장합니다. " * 3
    candidates, cut = [wrong, grounded, looping], [False, False, True]
    scored = score_captions(REFERENCE, candidates, cut, "rouge_l", facts=True)
    assert scored[1].facts == 1.0 and scored[0].facts < 0.5
    assert scored[2].repeated == pytest.approx(2 / 3) and scored[2].cut
    pair = best_and_worst("clip-1", candidates, scored, min_margin=0.1)
    assert pair["chosen"] == grounded and pair["rejected"] == looping
    assert pair["score_chosen"] - pair["score_rejected"] >= 0.1
    assert "repeats 67%" in pair["why"] and "cut by the generation budget" in pair["why"]
    assert best_and_worst("clip-1", candidates, scored, min_margin=10.0) is None  # too close to teach
    same = score_captions(REFERENCE, [wrong, wrong], [False, False], "rouge_l", facts=True)
    assert best_and_worst("clip-2", [wrong, wrong], same, min_margin=0.0) is None  # nothing to prefer


def test_more_pairs_a_clip_take_the_next_widest_gaps_of_the_same_candidates():
    grounded = REFERENCE.replace("등장합니다", "보입니다")
    wrong = "맑은 날 한낮에 도시의 모습을 담은 영상입니다. 화면에는 파란색 공 세 개가 등장합니다."
    looping = "화면에는 파란색 공 세 개가 등장합니다. " * 3
    candidates, cut = [wrong, grounded, looping, grounded], [False, False, True, False]  # a duplicate text
    scored = score_captions(REFERENCE, candidates, cut, "rouge_l", facts=True)
    pairs = ranked_pairs("clip-1", candidates, scored, min_margin=0.1, most=10)
    assert [p["rank"] for p in pairs] == list(range(len(pairs)))
    assert pairs[0] == {**best_and_worst("clip-1", candidates, scored, min_margin=0.1), "rank": 0}
    gaps = [p["score_chosen"] - p["score_rejected"] for p in pairs]
    assert gaps == sorted(gaps, reverse=True) and min(gaps) >= 0.1
    assert {(p["chosen"], p["rejected"]) for p in pairs} == {(grounded, looping), (grounded, wrong), (wrong, looping)}
    assert len(pairs) == 3  # the duplicate grounded caption adds no pair, and never faces itself
    assert ranked_pairs("clip-1", candidates, scored, min_margin=0.1, most=2) == pairs[:2]


def test_held_out_pairs_are_whole_clips():
    clips = pd.Series(["a", "a", "b", "c", "c", "c", "d", "e"])
    mask = heldout(clips, 0.4, seed=3)
    held = set(clips[mask])
    assert len(held) == 2 and all(mask[i] == (c in held) for i, c in enumerate(clips))  # a clip is in or out whole
    one_each = pd.Series(list("abcde"))
    assert heldout(one_each, 0.4, seed=3).sum() == 2  # one pair a clip: the pairs themselves


def test_repeats_and_facts_are_read_from_the_text():
    assert repeated_share("하나입니다. 둘입니다. 하나입니다.") == pytest.approx(1 / 3)
    assert repeated_share("") == 0.0
    assert facts_share(REFERENCE, REFERENCE) == 1.0
    assert facts_share("사실이 없는 문장입니다.", REFERENCE) is None  # a reference stating no fact scores none


def test_the_video_blind_control_gives_every_clip_another_clips_video():
    rows = pd.DataFrame({"sample_id": [f"c{i}" for i in range(7)], "frames": [f"f{i}.npy" for i in range(7)]})
    rows = rows.set_index("sample_id", drop=False)
    blind = other_clips(rows, seed=3)
    assert blind.index.tolist() == rows.index.tolist()  # looked up by the pair's own clip id
    assert (blind["sample_id"].values != rows.index.values).all()  # and every one reads another clip
    assert sorted(blind["frames"]) == sorted(rows["frames"])  # each video used once
    assert blind.equals(other_clips(rows, seed=3)) and not blind.equals(other_clips(rows, seed=4))
    two = rows.iloc[:2]
    assert other_clips(two, seed=0)["sample_id"].tolist() == ["c1", "c0"]


class ClipFeatures:
    """FeatureStore's reading side over fixed tensors: rows' `clip` column picks each clip's features."""

    def __init__(self, features: dict[str, torch.Tensor]):
        self.features = features

    def get(self, rows: pd.DataFrame) -> torch.Tensor:
        return torch.stack([self.features[c] for c in rows["clip"]])


def test_the_video_term_prefers_the_chosen_caption_on_its_own_clip_over_another_clips_video(base):  # noqa: F811
    """mDPO's conditional term (prefer.video_weight): the third sequence is the chosen caption on the
    `others` clip's video, and the loss adds weight × DPO(chosen on its clip, chosen on the other)."""
    from kocap.config import Config
    from kocap.train.prefer import REF, pair_logprobs, pair_loss, reference_logprobs

    _, tok, _, _, model = base
    torch.manual_seed(2)
    model.eval()
    cfg = Config(prefer={"video_weight": 2.0}, model={"prompt": "묘사해주세요.", "max_length": 512})
    n, width = video_tokens(model.config, 8), model.config.vision_config.hidden_size
    store = ClipFeatures({c: torch.randn(n, width) for c in ("a", "b")})
    rows = pd.DataFrame({"clip": ["a", "b"]}, index=["a", "b"])
    pairs = pd.DataFrame({"sample_id": ["a", "b"], "chosen": CAPTIONS[:2], "rejected": CAPTIONS[1::-1]})
    others = other_clips(rows, 0)  # a's row holds b's video and b's a's
    with torch.no_grad():
        chosen, rejected, on_other, _ = pair_logprobs(model, tok, store, cfg, pairs, rows, others)
        swapped = pair_logprobs(model, tok, store, cfg, pairs, others, None)  # the same captions, videos swapped
        assert pair_logprobs(model, tok, store, cfg, pairs, rows, None)[2] is None  # off: two sequences a pair
    assert torch.allclose(on_other, swapped[0], atol=1e-4) and not torch.allclose(on_other, chosen, atol=1e-3)

    ref = reference_logprobs(model, tok, store, cfg, pairs, rows, others)
    pairs[list(REF)] = torch.tensor(ref).T.numpy() - 0.5  # a reference the policy is 0.5 nats above on every side
    with torch.no_grad():
        loss, stats, _ = pair_loss(model, tok, store, cfg, pairs, rows, others)
    plain = dpo_loss(chosen, rejected, chosen - 0.5, rejected - 0.5, beta=0.1)[0]
    video = dpo_loss(chosen, on_other, chosen - 0.5, on_other - 0.5, beta=0.1)[0]
    assert loss.item() == pytest.approx(plain.item() + 2.0 * video.item(), abs=1e-4)
    assert stats["video_preference_accuracy"] == 0.5  # the policy is its reference, shifted evenly: a tie
    assert math.isnan(reference_logprobs(model, tok, store, cfg, pairs, rows, None)[2][0])
