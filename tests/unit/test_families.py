"""Model families: kocap's one frames -> features -> embeddings path gives, for each family, what the
family's own transformers forward computes from pixels; token counts, towers, quantization and the
stage-1 image path follow the family (kocap/model/family.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import CLIPVisionModel, Qwen3ForCausalLM

from kocap.model.build import assemble, load_base, tiny_text_config, tiny_vision_config
from kocap.model.family import FAMILIES, family, family_of
from kocap.model.preprocess import normalize
from kocap.model.presets import production_config, video_tokens
from kocap.model.text import IMAGE, add_tokens, encode, train_tiny_tokenizer
from kocap.model.video_lm import lm_inputs, pooled_features, video_media

CAPTIONS = ["맑은 날 도시 풍경입니다. 빨간색 자동차가 오른쪽으로 이동합니다.", "어두운 밤 해변입니다."] * 4


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def built(request, tmp_path_factory):
    torch.manual_seed(0)
    fam = family(request.param)
    tok = train_tiny_tokenizer(CAPTIONS + ["묘사해주세요."], tmp_path_factory.mktemp("tok"), vocab_size=300)
    tok = add_tokens(tok, fam.special_tokens)
    text = tiny_text_config(len(tok))
    vision = fam.tiny_tower_class(fam.tiny_vision_config(64, 8, text))
    model = assemble(vision, Qwen3ForCausalLM(text), tok, 8, fam).eval()
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return request.param, folder, tok, vision, model


def test_each_family_holds_the_pretrained_tower_in_every_tower_and_counts_its_tokens(built):
    name, _, _, vision, model = built
    fam = family_of(model.config)
    assert fam.name == name and isinstance(model, fam.model_class)
    for tower in fam.towers(model.model):
        assert all(torch.equal(tower.state_dict()[k], v) for k, v in vision.state_dict().items())
    # 8 x 8 patches: pooled 2x2 / all + CLS / a frame pair's 2x2-merged tokens
    tokens = {"llava-next-video": 8 * 8 * 8 // 4, "video-llava": 8 * (8 * 8 + 1), "qwen3-vl": 4 * 8 * 8 // 4}[name]
    width = {"qwen3-vl": 2 * 128}.get(name, 64)  # Qwen3-VL: the merger's output and one DeepStack feature
    assert video_tokens(model.config, 8) == tokens
    assert pooled_features(model, np.zeros((2, 8, 64, 64, 3), np.uint8)).shape == (2, tokens, width)


def test_kocaps_video_path_gives_the_familys_own_forward_from_pixels(built):
    """`pooled_features` + the family's LM inputs (cacheable features placed at the video tokens) versus the
    transformers model fed `pixel_values_videos` in its own layout: the same logits."""
    name, _, tok, _, model = built
    frames = np.random.default_rng(0).integers(0, 256, (1, 8, 64, 64, 3), dtype=np.uint8)
    n = video_tokens(model.config, 8)
    ids = torch.tensor([encode(tok, "묘사해주세요.", CAPTIONS[0], n, 2048, **video_media(model, n)).input_ids])
    with torch.no_grad():
        ours = model(**lm_inputs(model, ids, torch.ones_like(ids), pooled_features(model, frames))).logits
        theirs = model(input_ids=ids, **_own_video_inputs(name, model, frames, ids)).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    if name == "qwen3-vl":  # the video text: per frame pair a stamp and its 16 tokens between vision markers
        assert tok.decode(ids[0]).count("<|vision_start|>") == 4 and " seconds>" in tok.decode(ids[0])


def _own_video_inputs(name: str, model, frames: np.ndarray, ids: torch.Tensor) -> dict:
    """Pixels as the family's transformers processor lays them out (CLIP-normalized frames; for Qwen3-VL,
    mean/std 0.5 and Qwen3VLVideoProcessor's own patchify)."""
    if name != "qwen3-vl":
        return {"pixel_values_videos": torch.from_numpy(normalize(frames))}  # (1, 8, 3, 64, 64)
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    video = torch.from_numpy(frames).float().div(255).sub(0.5).div(0.5).permute(0, 1, 4, 2, 3)
    patches, t, h, w = Qwen3VLVideoProcessor.patchify(None, video, 8, 2, 2)  # needs no processor state
    return {
        "pixel_values_videos": patches[0],
        "video_grid_thw": torch.tensor([[t, h, w]]),
        "mm_token_type_ids": (ids == model.config.video_token_id).int() * 2,
    }


def test_the_image_path_of_each_family_consumes_the_tokens_it_counts(built):
    """Stage 1's image items: the family's pixel inputs and token count agree with its forward (a
    mismatch is transformers' 'features and tokens do not match')."""
    from kocap.model.presets import image_tokens

    _, _, tok, _, model = built
    fam = family_of(model.config)
    image = np.random.default_rng(1).integers(0, 256, (150, 100, 3), dtype=np.uint8)
    if fam.aligned:  # Qwen3-VL: stage 1 is skipped, and an image item is refused by name, not mis-shaped
        with pytest.raises(ValueError, match="aligned already"):
            fam.image_inputs(image, 64)
        return
    n = image_tokens(model.config, 150, 100)
    enc = encode(tok, "묘사해주세요.", CAPTIONS[1], n, 4096, media=IMAGE)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([enc.input_ids]), **fam.image_inputs(image, 64))
    assert out.logits.shape[1] == len(enc)
    with pytest.raises(ValueError):
        bad = encode(tok, "묘사해주세요.", CAPTIONS[1], n + 1, 4096, media=IMAGE)
        model(input_ids=torch.tensor([bad.input_ids]), **fam.image_inputs(image, 64))


def test_a_saved_base_loads_as_its_family_with_every_tower_kept_out_of_4_bit(built):
    import bitsandbytes as bnb

    name, folder, _, _, _ = built
    model = load_base(folder)
    fam = family(name)
    assert isinstance(model, fam.model_class)
    quantized = {n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert quantized and all(".language_model." in n for n in quantized)
    assert all(f"model.{t}" in fam.not_quantized for t in (fam.video_tower, fam.image_tower))


def test_production_token_counts_per_clip():
    """The figures README states per family: 1,152 video tokens (LLaVA-NeXT-Video, 336 px, pooled),
    2,056 (Video-LLaVA, 224 px, CLS kept) and 784 (Qwen3-VL, 448 px, frame pairs merged 2x2) for 8 frames."""
    assert video_tokens(production_config("Qwen/Qwen3-8B", 151669, 151670), 8) == 1152
    cfg = production_config("Qwen/Qwen3-8B", 151669, 151670, family_name="video-llava")
    assert video_tokens(cfg, 8) == 2056 == cfg.video_seq_length and cfg.vision_config.image_size == 224
    for checkpoint, width in (("Qwen/Qwen3-VL-4B-Instruct", 2560 * 4), ("Qwen/Qwen3-VL-8B-Instruct", 4096 * 4)):
        qwen_vl = production_config(checkpoint, 151656, 151655, family_name="qwen3-vl")
        assert video_tokens(qwen_vl, 8) == 4 * (448 // 16 // 2) ** 2 == 784  # 4 frame pairs x 14 x 14 merged
        assert family("qwen3-vl").feature_width(qwen_vl) == width  # merger output + 3 DeepStack features cached
        assert qwen_vl.text_config.rope_parameters["mrope_section"] == [24, 20, 20]  # Qwen3-VL's own split


@pytest.mark.parametrize("legacy_names", [False, True])
def test_video_llava_towers_are_taken_from_a_video_llava_checkpoint_with_a_qwen3_llm(tmp_path, legacy_names):
    """`video-llava-qwen3-8b` assembles from `LanguageBind/Video-LLaVA-7B-hf`: its two towers (different
    weights) are streamed out of that checkpoint, under transformers 5's names or those of checkpoints
    converted before it (`video_tower.vision_model.…`, as on the hub); its Vicuna is left behind and the
    Qwen3 LLM goes in."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration

    from kocap.model.build import assemble_to_folder

    torch.manual_seed(0)
    tok = train_tiny_tokenizer(CAPTIONS + ["묘사해주세요."], tmp_path / "tok", vocab_size=300)
    llama = LlamaConfig(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    source = VideoLlavaForConditionalGeneration(
        VideoLlavaConfig(vision_config=tiny_vision_config(64, 8), text_config=llama)
    )
    with torch.no_grad():
        source.model.image_tower.post_layernorm.weight.add_(1.0)  # the towers differ
    source.save_pretrained(tmp_path / "video-llava")
    if legacy_names:
        (shard,) = (tmp_path / "video-llava").glob("*.safetensors")
        state = {_legacy(k): v.contiguous() for k, v in source.state_dict().items()}
        shard.unlink()
        save_file(state, tmp_path / "video-llava/model.safetensors", metadata={"format": "pt"})
    llm = Qwen3ForCausalLM(tiny_text_config(len(tok)))
    llm.save_pretrained(tmp_path / "qwen3")
    out = tmp_path / "base"
    assemble_to_folder(str(tmp_path / "video-llava"), str(tmp_path / "qwen3"), tok, 8, out, fam=family("video-llava"))
    tok.save_pretrained(out)
    model = load_base(out, quantize=False)
    assert isinstance(model, VideoLlavaForConditionalGeneration) and video_tokens(model.config, 8) == 8 * 65
    for tower in ("video_tower", "image_tower"):
        theirs = getattr(source.model, tower).state_dict()
        assert all(torch.equal(t, theirs[k]) for k, t in getattr(model.model, tower).state_dict().items()), tower
    assert torch.equal(model.model.language_model.embed_tokens.weight, llm.model.embed_tokens.weight)
    assert not torch.equal(
        model.model.video_tower.post_layernorm.weight,
        model.model.image_tower.post_layernorm.weight,
    )


def _legacy(key: str) -> str:
    """A transformers-5 Video-LLaVA tensor name as checkpoints converted with transformers 4 spell it."""
    bare = key.removeprefix("model.")
    for tower in ("video_tower.", "image_tower."):
        if bare.startswith(tower):
            return tower + "vision_model." + bare[len(tower) :]
    return bare


def test_one_tower_in_two_families_caches_its_features_apart(tmp_path):
    """The same CLIP weights give 2x2-pooled features to LLaVA-NeXT-Video and CLS-kept ones to Video-LLaVA:
    the feature cache keys them apart, so switching family never reads the other's features."""
    from kocap.model import features

    tok = train_tiny_tokenizer(CAPTIONS + ["묘사해주세요."], tmp_path / "tok", vocab_size=300)
    vision = CLIPVisionModel(tiny_vision_config(64, 8))
    llm = Qwen3ForCausalLM(tiny_text_config(len(tok)))
    clip_families = [name for name in sorted(FAMILIES) if family(name).tiny_tower_class is CLIPVisionModel]
    keys = {features.tower_key(assemble(vision, llm, tok, 8, family(name))) for name in clip_families}
    assert len(keys) == len(clip_families) == 2
