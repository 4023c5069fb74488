"""Assembly keeps the pretrained parts; QLoRA quantizes only the LLM and trains only LoRA + projector."""

import bitsandbytes as bnb
import pytest
import torch
from transformers import CLIPVisionModel, Qwen3ForCausalLM

from kocap.model.build import assemble, load_qlora, tiny_text_config, tiny_vision_config
from kocap.model.presets import video_tokens
from kocap.model.text import encode, train_tiny_tokenizer

CAPTIONS = [
    "맑은 날 도시 풍경입니다. 빨간색 자동차가 오른쪽으로 이동합니다.",
    "어두운 밤 해변입니다. 파란색 공이 멈춰 있습니다.",
] * 4


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    tok = train_tiny_tokenizer(CAPTIONS + ["묘사해주세요."], tmp_path_factory.mktemp("tok"), vocab_size=300)
    vision = CLIPVisionModel(tiny_vision_config(64, 8))
    llm = Qwen3ForCausalLM(tiny_text_config(len(tok)))
    model = assemble(vision, llm, tok, num_frames=8)
    folder = tmp_path_factory.mktemp("base")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, tok, vision, llm, model


def test_assembly_holds_the_pretrained_tower_and_llm(base):
    _, tok, vision, llm, model = base
    assert type(model.model.language_model).__name__ == "Qwen3Model"
    for name, p in vision.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], p)
    assert torch.equal(model.model.language_model.embed_tokens.weight, llm.model.embed_tokens.weight)
    assert model.config.video_token_index == tok.convert_tokens_to_ids("<video>")
    assert video_tokens(model.config, 8) == 8 * (64 // 8) ** 2 // 4


def _batch(tok, model):
    enc = encode(tok, "묘사해주세요.", CAPTIONS[0], video_tokens(model.config, 8), 512)
    return torch.tensor([enc.input_ids]), torch.tensor([enc.labels]), torch.randn(1, 8, 3, 64, 64)


def test_qlora_trains_only_lora_and_the_projector(base):
    folder, tok, *_ = base
    model = load_qlora(folder, lora_r=8, lora_alpha=16)
    quantized = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and all(".language_model." in n for n in quantized)  # tower, projector, head: not 4-bit
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any("vision_tower" in n for n in trainable)  # no LoRA on CLIP
    assert all(("lora_" in n and "language_model" in n) or "modules_to_save" in n for n in trainable)
    ids, labels, video = _batch(tok, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.eval()
    with torch.no_grad():  # an eval-mode pass first: on CPU this used to silence LoRA gradients
        model(input_ids=ids, pixel_values_videos=video)
    model.train()
    for _ in range(2):
        model(input_ids=ids, pixel_values_videos=video, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(trainable)  # every LoRA and projector weight moved, nothing else
    assert any("lora_A" in n for n in changed) and any("modules_to_save" in n for n in changed)


def test_a_non_finite_loss_stops_training(tmp_path):
    from kocap.train.loop import LoopSpec, NonFiniteLoss, run_loop

    layer = torch.nn.Linear(2, 1)
    spec = LoopSpec(steps=5, lr=0.1, checkpoint_every=2, checkpoint_dir=tmp_path, signature="x")
    losses = iter([1.0, float("nan")])
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 1"):
        run_loop(layer, lambda step: (layer(torch.ones(2)).sum() * 0 + next(losses), 1, 1), spec)


def test_an_fp16_overflow_is_remedied_in_fp32_from_the_last_checkpoint(tmp_path):
    """The documented remedy for a non-finite loss on a T4: rerun with `stage2.precision: fp32`. The rerun
    is the same run (precision is not part of its signature), so it resumes from the last checkpoint
    instead of starting over; any other changed param still starts fresh."""
    import pandas as pd

    from kocap.config import load_config
    from kocap.train.finetune import signature
    from kocap.train.loop import LoopSpec, NonFiniteLoss, run_loop

    rows = pd.DataFrame({"sample_id": ["a", "b"], "shard": ["s0", "s0"]})
    fp16, fp32, other = (
        load_config(overrides=o)
        for o in (["stage2.precision=fp16"], ["stage2.precision=fp32"], ["stage2.precision=fp32", "stage2.lr=0.5"])
    )
    assert signature(fp16, rows, tmp_path) == signature(fp32, rows, tmp_path) != signature(other, rows, tmp_path)
    layer = torch.nn.Linear(2, 1)

    def batch(m):  # overflows at step 3, after the checkpoint of step 2
        value = layer(torch.ones(2)).pow(2).sum()
        return (value * float("inf") if m == 3 else value), 1, 1

    sig = signature(fp16, rows, tmp_path)
    spec = LoopSpec(steps=5, lr=0.1, checkpoint_every=2, checkpoint_dir=tmp_path, signature=sig, precision="fp16")
    with pytest.raises(NonFiniteLoss, match="at step 3"):
        run_loop(layer, batch, spec)
    fixed = LoopSpec(**{**spec.__dict__, "signature": signature(fp32, rows, tmp_path), "precision": "fp32"})
    assert run_loop(layer, lambda m: (layer(torch.ones(2)).pow(2).sum(), 1, 1), fixed)["resumed_from"] == 2


def test_anyres_preprocessing_equals_llava_next_image_processor():
    import numpy as np
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    from kocap.model.preprocess import anyres
    from kocap.model.presets import ANYRES_GRIDS

    for h, w, size in [(768, 1024, 336), (500, 1500, 336), (144, 192, 64), (192, 144, 64), (100, 300, 64)]:
        img = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = LlavaNextImageProcessorPil(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            image_grid_pinpoints=[[a * size, b * size] for a, b in ANYRES_GRIDS],
        )
        expected = ref(images=img, return_tensors="np")["pixel_values"][0]
        assert np.abs(anyres(img, size) - expected).max() < 1e-6


def test_an_fp16_run_resumed_after_a_kill_keeps_the_loss_scale_of_the_unbroken_run(tmp_path):
    """fp16 (a T4) trains with a GradScaler whose scale halves at each overflow and grows after 2,000
    clean steps: the checkpoint holds it, so a resumed run scales and skips steps as the unbroken one."""
    from kocap.train.loop import LoopSpec, run_loop

    def train(folder, kill_at=None):
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 1)
        spec = LoopSpec(steps=4, lr=0.1, checkpoint_every=2, checkpoint_dir=folder, signature="s", precision="fp16")

        def batch(m):
            if m == kill_at:
                raise KeyboardInterrupt("killed")
            z = layer(torch.ones(1, 4))
            if m == 1:  # an overflow: d sqrt(|z - z|) is not finite, so the scaler skips the step and halves
                return (z - z.detach()).abs().sqrt().sum(), 1, 1
            return z.pow(2).sum(), 1, 1

        return layer, spec, batch

    layer, spec, batch = train(tmp_path / "a", kill_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_loop(layer, batch, spec)
    layer, spec, batch = train(tmp_path / "a")
    assert run_loop(layer, batch, spec)["resumed_from"] == 2
    unbroken_layer, unbroken_spec, unbroken_batch = train(tmp_path / "b")
    run_loop(unbroken_layer, unbroken_batch, unbroken_spec)
    resumed = torch.load(tmp_path / "a/step-0000004/state.pt", weights_only=False)
    unbroken = torch.load(tmp_path / "b/step-0000004/state.pt", weights_only=False)
    assert unbroken["scaler"]["scale"] < 2.0**16  # overflows (step 1's, and fp16's own) halved the initial 65536
    assert resumed["scaler"] == unbroken["scaler"]
    assert all(torch.equal(resumed["trainable"][k], unbroken["trainable"][k]) for k in unbroken["trainable"])


def test_the_tower_is_hashed_once_per_loaded_model_and_the_key_follows_its_weights(base, monkeypatch):
    """Evaluation builds a feature store per shard: CLIP-L's 1.2 GB are hashed once per loaded tower,
    while a tower with other weights still gets another cache key."""
    from transformers import LlavaNextVideoForConditionalGeneration

    from kocap.model import features

    folder, *_ = base
    calls = []
    real = features._hash_tower
    monkeypatch.setattr(features, "_hash_tower", lambda *a: calls.append(1) or real(*a))
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(folder)
    keys = {features.tower_key(model) for _ in range(3)}
    assert len(keys) == 1 and len(calls) == 1
    other = LlavaNextVideoForConditionalGeneration.from_pretrained(folder)
    with torch.no_grad():
        next(other.model.vision_tower.parameters()).add_(1.0)
    assert features.tower_key(other) not in keys and len(calls) == 2
