"""The tiny preset's stand-ins for pretrained parts: the LM's chat-format turns and the tower's
bag-of-words pre-training on training frames (kocap/train/assemble.py)."""

import numpy as np
import pandas as pd
import torch
from transformers import CLIPVisionModel, Qwen3ForCausalLM

from kocap import paths
from kocap.config import load_config
from kocap.model.build import assemble, tiny_text_config, tiny_vision_config
from kocap.model.text import train_tiny_tokenizer, user_turn
from kocap.sample.facts import read_facts
from kocap.train.assemble import GeneratedStills, chat_sequence, pretrain_tiny_tower

PROMPT = "이 영상을 한국어로 상세히 묘사해주세요."
CAPTIONS = {"빨간색": "화면에는 빨간색 공이 있습니다.", "파란색": "화면에는 파란색 공이 있습니다."}
NO_STILLS = "model.tiny_tower.generated_frames=0"  # the colours below come from the training frames alone
RGB = {"빨간색": (220, 40, 40), "파란색": (40, 80, 230)}


def _tokenizer(tmp_path):
    return train_tiny_tokenizer([*CAPTIONS.values(), user_turn(PROMPT)], tmp_path / "tok", vocab_size=300)


def test_a_pretraining_turn_puts_the_loss_on_the_answer_only(tmp_path):
    tok = _tokenizer(tmp_path)
    ids, labels = chat_sequence(tok, CAPTIONS["빨간색"], PROMPT)
    prompt_len = len(tok(user_turn(PROMPT, ""), add_special_tokens=False)["input_ids"])
    assert len(ids) == len(labels) and labels[:prompt_len] == [-100] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    assert tok.decode(ids[prompt_len:]) == CAPTIONS["빨간색"] + "<|im_end|>"
    assert tok.convert_tokens_to_ids("<video>") not in ids  # no media in a text-only turn


def test_the_tiny_tower_learns_which_caption_words_its_frames_show_and_is_frozen_after(tmp_path):
    tok = _tokenizer(tmp_path)
    torch.manual_seed(0)
    model = assemble(CLIPVisionModel(tiny_vision_config(64, 8)), Qwen3ForCausalLM(tiny_text_config(len(tok))), tok, 8)
    colours = ["빨간색", "파란색"] * 8
    frames = np.full((len(colours), 8, 64, 64, 3), 128, np.uint8)
    for i, c in enumerate(colours):
        frames[i, :, 20:44, 20:44] = RGB[c]
    (tmp_path / paths.FRAMES).mkdir(parents=True)
    np.save(tmp_path / paths.FRAMES / "s.npy", frames)
    rows = pd.DataFrame({"shard": "s.npy", "offset": range(len(colours)), "caption_ko": [CAPTIONS[c] for c in colours]})
    tower_before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    lm_before = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}

    def pretrain(steps):
        cfg = load_config(
            overrides=[f"model.tiny_tower.pretrain_steps={steps}", "model.tiny_tower.batch_size=8", NO_STILLS]
        )
        return pretrain_tiny_tower(model, rows, tok, tmp_path, cfg)

    first = pretrain(1)
    model.model.vision_tower.load_state_dict(tower_before)
    trained = pretrain(60)
    assert trained < 0.5 * first  # the colour words become predictable from the frames
    after = model.model.vision_tower.state_dict()
    assert any(not torch.equal(after[k], tower_before[k]) for k in after)
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())  # frozen, as CLIP is
    assert all(torch.equal(model.model.language_model.state_dict()[k], v) for k, v in lm_before.items())
    assert pretrain(0) is None  # 0 steps: the random tower as it was


def test_generated_stills_are_seeded_preprocessed_frames_with_captions_that_state_every_fact():
    cfg = load_config(overrides=["model.preset=tiny"])
    stills = GeneratedStills(6, cfg, 64, seed=0)
    frames = np.stack([stills.frame(i) for i in reversed(range(6))])[::-1]  # any order: still i is (seed, i)'s
    assert frames.shape == (6, 64, 64, 3) and frames.dtype == np.uint8
    assert all(None not in read_facts(c).values() for c in stills.captions)  # each states the scene it shows
    again = GeneratedStills(6, cfg, 64, seed=0)
    assert np.array_equal(frames, np.stack([again.frame(i) for i in range(6)])) and again.captions == stills.captions
    assert GeneratedStills(8, cfg, 64, seed=0).captions[:6] == stills.captions  # more stills keep the first ones
    other = GeneratedStills(6, cfg, 64, seed=1)
    assert not np.array_equal(frames, np.stack([other.frame(i) for i in range(6)]))
    assert len({f.tobytes() for f in frames}) == 6
