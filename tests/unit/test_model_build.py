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
