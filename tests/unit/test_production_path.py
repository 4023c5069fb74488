"""The production path's pieces on the CPU: precision choice, the answer-only loss, the truncated
tower, gradient accumulation, per-preset defaults, the generation budget, stage 1's length policy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kocap.config import load_config
from kocap.model import runtime
from kocap.model.captioner import generation_budget
from kocap.model.presets import video_tokens
from kocap.model.text import SampleTooLong, encode
from kocap.model.video_lm import answer_loss, embed, layer_hidden, pooled_features
from kocap.train import align
from kocap.train.loop import EpochSchedule, LoopSpec, run_loop

from .test_model_build import CAPTIONS, base  # noqa: F401  (the tiny base checkpoint fixture)


@pytest.mark.parametrize(
    "capability, expected", [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")]
)
def test_auto_precision_goes_by_compute_capability(capability, expected):
    assert runtime.for_capability(capability) == expected  # a T4 says is_bf16_supported() too: not asked
    assert runtime.precision("auto", "cpu") == "fp32" and runtime.precision("fp16", "cpu") == "fp16"


def test_the_tower_stops_at_the_feature_layer_with_the_same_features(base):  # noqa: F811
    model = base[4].eval()
    pixels = torch.randn(3, 3, 64, 64)
    full = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert torch.equal(layer_hidden(model.model.vision_tower, model.config.vision_feature_layer, pixels)[:, 1:], full)
    frames = np.random.default_rng(0).integers(0, 255, (3, 8, 64, 64, 3), dtype=np.uint8)
    assert torch.allclose(pooled_features(model, frames, max_frames=5), pooled_features(model, frames), atol=1e-6)


def test_the_answer_only_loss_equals_transformers_causal_lm_loss(base):  # noqa: F811
    _, tok, _, _, model = base
    n = video_tokens(model.config, 8)
    encoded = [encode(tok, "묘사해주세요.", c, n, 512) for c in CAPTIONS[:2]]
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.tensor([e.input_ids + [tok.pad_token_id] * (width - len(e.input_ids)) for e in encoded])
    labels = torch.tensor([e.labels + [-100] * (width - len(e.labels)) for e in encoded])
    mask = (ids != tok.pad_token_id).long()
    feats = torch.randn(2, n, model.config.vision_config.hidden_size)
    embeds = embed(model, ids, feats)
    reference = model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    assert torch.allclose(answer_loss(model, labels, inputs_embeds=embeds, attention_mask=mask), reference, atol=1e-6)


def test_gradient_accumulation_runs_every_micro_batch_once(tmp_path):
    weight = torch.nn.Parameter(torch.ones(1))
    model = torch.nn.Module()
    model.weight = weight
    seen = []

    def batch(m: int):
        seen.append(m)
        return (weight * m).sum(), 1, 1

    spec = LoopSpec(
        steps=3, lr=0.1, checkpoint_every=100, checkpoint_dir=tmp_path, signature="s", accum=2, micro_batches=5
    )
    assert run_loop(model, batch, spec)["steps"] == 3
    assert seen == [0, 1, 2, 3, 4]  # the last step takes the one micro-batch left
    schedule = EpochSchedule(samples=5, batch_size=2, epochs=2, seed=0)
    assert schedule.micro_batches == 6
    assert sorted(np.concatenate([schedule.indices(m) for m in range(3)])) == list(range(5))  # an epoch = every sample


def test_presets_carry_their_training_defaults_and_params_win():
    tiny = load_config("params.yaml")
    assert (tiny.stage2.lr, tiny.stage2.batch_size, tiny.stage2.lora_r) == (1e-3, 8, 64)
    big = load_config("params.yaml", ["model.preset=qwen3-8b"])
    assert (big.stage2.lr, big.stage2.batch_size, big.stage2.grad_accum, big.stage2.lora_r) == (2e-4, 1, 8, 16)
    assert big.eval.batch_size == 8 and big.stage1.batch_size == 1
    assert load_config("params.yaml", ["model.preset=qwen3-8b", "stage2.lr=5e-5"]).stage2.lr == 5e-5
    with pytest.raises(ValueError):
        load_config("params.yaml", ["stage2.grad_accum=0"])


def test_the_generation_budget_covers_the_longest_caption(base):  # noqa: F811
    tok = base[1]
    longest = max(len(tok(c + "<|im_end|>", add_special_tokens=False)["input_ids"]) for c in CAPTIONS)
    assert generation_budget(tok, CAPTIONS) == int(np.ceil(longest * 1.25)) + 16


def test_stage1_images_over_their_max_length_follow_the_too_long_policy(base, tmp_path):  # noqa: F811
    folder, tok, _, _, model = base
    (tmp_path / "data/validated").mkdir(parents=True)
    for i, size in enumerate([(64, 64), (200, 300)]):
        Image.fromarray(np.zeros((*size, 3), np.uint8)).save(tmp_path / f"{i}.png")
    pd.DataFrame(
        {"sample_id": ["small", "large"], "image_path": ["0.png", "1.png"], "caption_ko": CAPTIONS[:2]}
    ).to_parquet(tmp_path / "data/validated/images.parquet")
    cfg = load_config("params.yaml", ["stage1.max_length=300", "model.too_long=drop"])
    items, dropped = align.image_items(cfg, tmp_path, tok, model)
    assert len(items) == 1 and dropped == 1  # the AnyRes grid of the large one needs more positions: counted
    with pytest.raises(SampleTooLong, match="large"):
        align.image_items(load_config("params.yaml", ["stage1.max_length=300"]), tmp_path, tok, model)


def test_stage1_image_items_hold_no_pixels_and_decode_per_micro_batch(base, tmp_path):  # noqa: F811
    """Stage 1's memory must not grow with the image count (MS-COCO is ~600,000 pairs): an item holds
    ids and a path, and the AnyRes pixels are decoded when its micro-batch trains."""
    from kocap.model.family import family_of
    from kocap.model.preprocess import anyres

    folder, tok, _, _, model = base
    (tmp_path / "data/validated").mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 256, (150, 100, 3), dtype=np.uint8)  # taller than wide
    Image.fromarray(image).save(tmp_path / "tall.png")
    pd.DataFrame({"sample_id": ["tall"], "image_path": ["tall.png"], "caption_ko": CAPTIONS[:1]}).to_parquet(
        tmp_path / "data/validated/images.parquet"
    )
    items, _ = align.image_items(load_config("params.yaml"), tmp_path, tok, model)
    (kind, item), size = items[0], model.config.vision_config.image_size
    assert kind == "image" and not any(isinstance(x, (np.ndarray, torch.Tensor)) for x in item)
    ids, labels, media = align.image_inputs(tmp_path, item, size, family_of(model.config))
    assert media["image_sizes"].tolist() == [[150, 100]] and ids.shape == labels.shape
    assert torch.equal(media["pixel_values"][0], torch.from_numpy(anyres(image, size)))


def test_greedy_captions_do_not_depend_on_the_batch_or_the_seed(base):  # noqa: F811
    from kocap.model.video_lm import generate

    _, tok, _, _, model = base
    model.eval()
    feats = torch.randn(3, video_tokens(model.config, 8), model.config.vision_config.hidden_size)
    run = lambda f, seed=0: generate(model, tok, f, "묘사해주세요.", 12, 512, do_sample=False, seed=seed)[0]  # noqa: E731
    together = run(feats)
    assert [run(feats[i : i + 1])[0] for i in range(3)] == together  # alone = in a batch
    assert len(set(run(feats[:1].repeat(8, 1, 1)))) == 1  # 8 copies, one caption
    assert run(feats, seed=5) == together  # the seed changes nothing


def test_generation_that_overflows_stops_loudly_instead_of_decoding_garbage(base):  # noqa: F811
    """NaN logits made greedy decoding emit token 0 over and over, and evaluation scored it as a caption."""
    import copy

    from kocap.model.video_lm import NonFiniteLogits, generate

    _, tok, _, _, model = base
    broken = copy.deepcopy(model).eval()
    with torch.no_grad():
        broken.lm_head.weight[0, 0] = float("inf")  # what an fp16 overflow leaves in the activations
    feats = torch.randn(2, video_tokens(model.config, 8), model.config.vision_config.hidden_size)
    with pytest.raises(NonFiniteLogits, match="non-finite logits"):
        generate(broken, tok, feats, "묘사해주세요.", 12, 512, do_sample=False)
    assert len(generate(model.eval(), tok, feats, "묘사해주세요.", 12, 512, do_sample=False)[0]) == 2
