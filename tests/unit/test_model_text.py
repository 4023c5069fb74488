"""Token counts of the design, the chat template, labels only on the answer, and the no-truncation rule."""

import types

import pytest
import torch
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches
from transformers.models.llava_next_video.modeling_llava_next_video import LlavaNextVideoModel

from kocap.model.presets import (
    anyres_tokens_before_unpadding,
    frame_tokens,
    image_tokens,
    production_config,
    video_tokens,
)
from kocap.model.text import IGNORE, IM_END, SampleTooLong, encode, train_tiny_tokenizer, user_turn

PROMPT = "이 영상을 한국어로 상세히 묘사해주세요."
CAPTIONS = [
    "맑은 날 도시의 풍경입니다. 빨간색 자동차가 오른쪽으로 이동합니다.",
    "어두운 밤 해변의 모습입니다. 파란색 공이 멈춰 있습니다.",
    "흐린 저녁 자연 풍경입니다. 카메라가 천천히 확대됩니다.",
] * 5


@pytest.mark.parametrize("llm", ["Qwen/Qwen3-8B", "Qwen/Qwen3-4B"])
def test_production_token_counts(llm):
    cfg = production_config(llm, video_token_id=151669, image_token_id=151670)
    v = cfg.vision_config
    assert (v.image_size // v.patch_size) ** 2 == 576  # tokens per 336 px frame
    assert frame_tokens(cfg) == 144 and video_tokens(cfg, 8) == 1152
    assert anyres_tokens_before_unpadding(cfg, 768, 1024) == 2880  # the design's count: 4 tiles + thumbnail
    assert image_tokens(cfg, 768, 1024) == 2340  # what the model consumes (unpadded + newlines)
    assert cfg.text_config.hidden_size == {"Qwen/Qwen3-8B": 4096, "Qwen/Qwen3-4B": 2560}[llm]


@pytest.mark.parametrize("h, w", [(768, 1024), (1024, 768), (336, 336), (500, 1500), (1080, 1920), (200, 900)])
def test_image_token_count_matches_what_transformers_packs(h, w):
    cfg = production_config("Qwen/Qwen3-8B", 151669, 151670)
    tiles = image_size_to_num_patches((h, w), cfg.image_grid_pinpoints, 336)
    model = types.SimpleNamespace(config=cfg)  # pack_image_features only reads the config
    _, lens = LlavaNextVideoModel.pack_image_features(
        model, [torch.zeros(tiles, 576, 4)], torch.tensor([[h, w]]), "default", torch.zeros(4)
    )
    assert int(lens[0]) == image_tokens(cfg, h, w)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(CAPTIONS + [PROMPT], tmp_path_factory.mktemp("tok"), vocab_size=400)


def test_chatml_non_thinking_and_labels_only_on_the_answer(tok):
    enc = encode(tok, PROMPT, CAPTIONS[0], media_tokens=16, max_length=512)
    video_id = tok.convert_tokens_to_ids("<video>")
    assert enc.input_ids.count(video_id) == 16
    answer = [i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE]
    assert tok.decode(answer) == CAPTIONS[0] + IM_END
    assert all(lab == IGNORE for lab, i in zip(enc.labels, enc.input_ids) if i == video_id)
    prompt_only = encode(tok, PROMPT, None, 16, 512)
    assert enc.input_ids[: len(prompt_only.input_ids)] == prompt_only.input_ids  # inference = training prefix
    assert tok.decode(prompt_only.input_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert user_turn(PROMPT).startswith("<|im_start|>user\n<video>\n" + PROMPT)


def test_a_sample_too_long_is_an_error_never_a_cut(tok):
    with pytest.raises(SampleTooLong, match="sample 'clip7' needs .* never truncated"):
        encode(tok, PROMPT, CAPTIONS[0], media_tokens=1152, max_length=1024, sample_id="clip7")
    fits = encode(tok, PROMPT, CAPTIONS[0], media_tokens=1152, max_length=2048)
    assert fits.input_ids.count(tok.convert_tokens_to_ids("<video>")) == 1152


def test_an_encoded_sample_holds_its_media_run_as_a_count(tok):
    """Every training item stays in host memory for the whole stage: 1,152 video (or ~2,900 AnyRes image)
    ids in two Python lists (ids, labels) are 8 bytes an entry, ~18 KB (~46 KB) an item, ~28 GB for
    MS-COCO's 600,000 pairs (arithmetic, not a measurement)."""
    enc = encode(tok, PROMPT, CAPTIONS[0], media_tokens=1152, max_length=2048)
    held = enc.before.nbytes + enc.after.nbytes + enc.answer.nbytes
    assert len(enc) == len(enc.input_ids) == len(enc.labels) > 1152 and held < 4 * (len(enc) - 1152) + 1


def test_too_long_samples_are_a_counted_drop_when_asked(tok):
    import pandas as pd

    from kocap.config import load_config
    from kocap.train.samples import encode_rows

    rows = pd.DataFrame({"sample_id": ["short", "long"], "caption_ko": [CAPTIONS[0], CAPTIONS[0] * 40]})
    cfg = load_config("/nonexistent", ["model.max_length=400", "model.too_long=drop"])
    encoded, kept, dropped = encode_rows(rows, tok, cfg, media_tokens=128)
    assert dropped == 1 and kept["sample_id"].tolist() == ["short"] and len(encoded) == 1
    with pytest.raises(SampleTooLong, match="'long'"):
        encode_rows(rows, tok, load_config("/nonexistent", ["model.max_length=400"]), media_tokens=128)


@pytest.mark.parametrize("chat_name", ["chatml", "vicuna"])
def test_the_exported_chat_template_renders_the_training_turn(tok, chat_name):
    """Plain transformers' `apply_chat_template` on an exported model gives exactly the turn kocap trains on,
    in Qwen's ChatML and in the original LLaVA checkpoints' Vicuna format."""
    from kocap.model.text import CHATML, VICUNA

    chat = {"chatml": CHATML, "vicuna": VICUNA}[chat_name]
    tok.chat_template = chat.template
    video = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    assert tok.apply_chat_template(video, add_generation_prompt=True, tokenize=False) == chat.user_turn(PROMPT)
    image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    rendered = tok.apply_chat_template(image, add_generation_prompt=True, tokenize=False)
    assert rendered == chat.user_turn(PROMPT, "<image>")
    without = tok.apply_chat_template(video, add_generation_prompt=False, tokenize=False)
    assert (
        without
        == chat.user_turn(PROMPT).removesuffix(chat.before_answer)
        + {"chatml": "<|im_end|>\n", "vicuna": " "}[chat_name]
    )
    assert user_turn(PROMPT) == CHATML.user_turn(PROMPT)  # the module's ChatML helpers are the chat's
