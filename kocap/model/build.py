"""Assembling a family's model (LLaVA-NeXT-Video, Video-LLaVA) with a Qwen3 LLM, and preparing it for QLoRA.

    model = assemble(vision, llm, tokenizer, num_frames)      # pretrained tower + LLM, fresh projector
    model = load_qlora(base_dir, lora_r=16, lora_alpha=32, prec="fp16", device="cuda")  # 4-bit LLM, LoRA

Traps handled here (shared/notes/model.md and checks on transformers 5.24):
- `llm_int8_skip_modules` must name full module paths (`model.vision_tower`); the short names of
  older releases no longer match, and the tower and projector would be quantized.
- LoRA targets the language model by regex; `"all-linear"` or `["q_proj", ...]` would also hit CLIP.
- Memory on a T4: what is not quantized (tower, embeddings, head) is stored in the compute dtype
  (fp16 on a T4: 9.5 -> 6.6 GiB of weights for qwen3-8b), while what trains (LoRA, projector) is
  kept in fp32 so small updates are not rounded away.
- On CPU, an eval-mode forward repacks bnb 4-bit weights and LoRA gradients silently vanish:
  `support_avx512bf16_for_cpu` is turned off on every 4-bit layer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from transformers import (
    BitsAndBytesConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlavaNextVideoForConditionalGeneration,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from .family import Family, family, family_of
from .runtime import dtype

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"  # never a tower
NOT_QUANTIZED = family("llava-next-video").not_quantized  # model.vision_tower, the projector, lm_head


def tiny_vision_config(image_size: int, patch_size: int) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )


def tiny_text_config(vocab_size: int) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=128,  # 2x128: a step costs a third of 4x256's, which bought stage 2 its steps (README)
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # 4 heads of 32 (2 KV): 0.848 against 2 of 64's 0.838, faster (README)
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )


def assemble(
    vision: CLIPVisionModel, llm: Qwen3ForCausalLM, tokenizer, num_frames: int, fam: Family | None = None
) -> LlavaNextVideoForConditionalGeneration:
    """A model of the family (LLaVA-NeXT-Video by default) holding `vision` (every tower) and `llm`
    weights, with a fresh projector."""
    fam = fam or family("llava-next-video")
    if llm.get_input_embeddings().num_embeddings < len(tokenizer):
        llm.resize_token_embeddings(len(tokenizer))  # room for <video> and <image>
    cfg = fam.config(vision.config, llm.config, num_frames=num_frames, **fam.token_ids(tokenizer))
    model = fam.model_class(cfg)
    for tower in fam.towers(model.model):
        tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(llm.model.state_dict())
    model.lm_head.load_state_dict(llm.lm_head.state_dict())
    return model


SHARD_BYTES = 2 * 2**30  # output shard size: bounds host RAM while assembling


def assemble_to_folder(
    vision_src: str,
    llm_src: str,
    tokenizer,
    num_frames: int,
    out: Path,
    seed: int = 0,
    names: tuple | None = None,
    fam: Family | None = None,
    image_size: int | None = None,
    whole: bool = False,
) -> int:
    """Write the base checkpoint of a pretrained tower + LLM to `out` without building the model:
    the LLM's tensors stream from its safetensors shards into ours under the LLaVA names, so host
    RAM holds one output shard (2 GiB) and the tower, never the LLM (qwen3-8b in memory twice was ~34 GB).
    The projector and `image_newline` are fresh (seeded). `names` (the preset's vision and llm) go into
    the config in place of the folders they were read from, so the same sources assemble the same bytes
    on any machine (its DVC hash is how a registered version finds its base). Returns the parameter count.
    `vision_src` is a CLIP vision model (every tower of the family gets it) or, for Video-LLaVA, a
    Video-LLaVA checkpoint whose own video and image towers are taken. An aligned family (Qwen3-VL), or
    `whole`, takes one trained checkpoint whole (`vision_src` = `llm_src`), its frames at `image_size`."""
    from transformers import AutoConfig

    fam = fam or family("llava-next-video")
    if fam.aligned or whole:
        return _copy_pretrained(vision_src, tokenizer, out, fam, image_size, (names or (vision_src,))[0])
    towers = _tower_tensors(vision_src, fam)
    vision_cfg = towers.pop("config")
    text = AutoConfig.from_pretrained(llm_src)
    ids = fam.token_ids(tokenizer)
    if len(tokenizer) > text.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but {llm_src} only {text.vocab_size} embedding rows"
        )
    cfg = fam.config(vision_cfg, text, num_frames=num_frames, **ids)
    cfg.vision_config._name_or_path, cfg.text_config._name_or_path = names or (vision_src, llm_src)
    with torch.device("meta"):
        skeleton = fam.model_class(cfg)
    expected = set(skeleton.state_dict()) - ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out)
    for name, tensor in _fresh_parts(skeleton, cfg, seed).items():
        writer.add(name, tensor)
    for name, tensor in towers.items():
        writer.add(name, tensor)
    for name, tensor in _llm_tensors(Path(_local(llm_src))):
        writer.add(name, tensor)
    return _finish(writer, skeleton, cfg, expected, out, "assembled checkpoint")


def _finish(writer, skeleton, cfg, expected: set, out: Path, what: str) -> int:
    """Close the shards, check they hold exactly the model's tensors, save its config; the parameter count."""
    writer.close()
    if set(writer.index) != expected:
        raise ValueError(
            f"{what} does not match {type(skeleton).__name__}: missing {sorted(expected - set(writer.index))[:5]}"
            f", unexpected {sorted(set(writer.index) - expected)[:5]}"
        )
    cfg.save_pretrained(out)
    return sum(p.numel() for p in skeleton.parameters())


def _copy_pretrained(src: str, tokenizer, out: Path, fam: Family, image_size: int, name: str) -> int:
    """A trained video-language checkpoint as the base, streamed shard by shard (nothing fresh in it) under
    transformers 5's names; its tokens must be the tokenizer's, and its config records the frame size."""
    from safetensors import safe_open
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(_local(src))
    if cfg.model_type != fam.model_type:
        raise ValueError(f"{src} is a {cfg.model_type} checkpoint, not the {fam.name} family's ({fam.model_type})")
    ids = fam.token_ids(tokenizer)
    ours = {"video_token_id": ids["video_id"]}
    if "start_id" in ids:
        ours["vision_start_token_id"] = ids["start_id"]
    if any(getattr(cfg, k) != v for k, v in ours.items()):
        raise ValueError(f"{src}'s media token ids differ from its tokenizer's ({ours}): a mismatched tokenizer")
    if len(tokenizer) > cfg.text_config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but {src} only {cfg.text_config.vocab_size} rows")
    if fam.aligned:  # Qwen3-VL's tower takes any size of whole merged patches: the preset's is recorded
        cfg.vision_config.image_size = image_size
    elif image_size and image_size != cfg.vision_config.image_size:
        raise ValueError(f"{src}'s tower takes {cfg.vision_config.image_size} px frames, not the preset's {image_size}")
    cfg._name_or_path = name
    with torch.device("meta"):
        skeleton = fam.model_class(cfg)
    expected = set(skeleton.state_dict()) - ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out)
    for file in sorted(Path(_local(src)).glob("*.safetensors")):
        with safe_open(file, "pt") as f:
            for key in f.keys():
                writer.add(current_name(key), f.get_tensor(key))
    return _finish(writer, skeleton, cfg, expected, out, src)


LEGACY_NAMES = (  # LLaVA checkpoints saved before transformers 4.52 (the hub's llava-hf/* and Video-LLaVA-7B-hf)
    (re.compile(r"^language_model\.lm_head\."), "lm_head."),
    (re.compile(r"^language_model\.model\."), "model.language_model."),
    (re.compile(r"^(vision_tower|video_tower|image_tower|multi_modal_projector|image_newline)\b"), r"model.\1"),
    (re.compile(r"^model\.(vision_tower|video_tower|image_tower)\.vision_model\."), r"model.\1."),  # CLIPVisionModel's
)


def current_name(key: str) -> str:
    """A checkpoint tensor's name as transformers 5 models it (what its loader renames on the fly)."""
    for pattern, repl in LEGACY_NAMES:
        key = pattern.sub(repl, key)
    return key


def _tower_tensors(vision_src: str, fam: Family) -> dict:
    """{"config": the tower's CLIPVisionConfig, full name: tensor for every tower of the family}."""
    from transformers import AutoConfig

    source_cfg = AutoConfig.from_pretrained(vision_src)
    if source_cfg.model_type != "video_llava":
        vision = CLIPVisionModel.from_pretrained(vision_src, dtype="auto")  # as stored: 1.2 GB for CLIP-L in fp32
        tensors = {  # a second tower gets copies: safetensors refuses tensors that share memory
            f"model.{attr}.{name}": t if attr == fam.video_tower else t.clone()
            for attr in dict.fromkeys((fam.video_tower, fam.image_tower))
            for name, t in vision.state_dict().items()
        }
        return {"config": vision.config, **tensors}
    if fam.name != "video-llava":
        raise ValueError(f"{vision_src} is a Video-LLaVA checkpoint: its towers serve the video-llava family only")
    from safetensors import safe_open

    folder, tensors = Path(_local(vision_src)), {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "pt") as f:
            for key in f.keys():  # under transformers 5's names, whichever the checkpoint was saved with
                name = current_name(key)
                if name.startswith(("model.video_tower.", "model.image_tower.")):
                    tensors[name] = f.get_tensor(key)
    return {"config": source_cfg.vision_config, **tensors}


def _local(source: str) -> str:
    """A local folder for a hub id (from the Hugging Face cache; offline it must be there) or a folder."""
    if Path(source).is_dir():
        return source
    from huggingface_hub import snapshot_download

    return snapshot_download(source, allow_patterns=["*.json", "*.safetensors"])


def _llm_tensors(folder: Path):
    """(LLaVA name, tensor) for every tensor of a causal LM's safetensors, one at a time."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}: the LLM must be stored as safetensors")
    for file in files:
        with safe_open(file, "pt") as f:
            for key in f.keys():
                if key.startswith("model."):
                    yield f"model.language_model.{key[len('model.') :]}", f.get_tensor(key)
                elif key == "lm_head.weight":
                    yield key, f.get_tensor(key)
                else:
                    raise ValueError(f"unexpected tensor {key!r} in {file}: not a Qwen3 causal LM checkpoint")


def _fresh_parts(skeleton, cfg, seed: int) -> dict[str, torch.Tensor]:
    """A freshly initialised projector and image_newline, as transformers initialises them."""
    gen = torch.Generator().manual_seed(seed)
    std, parts = cfg.text_config.initializer_range, {}
    for name, p in skeleton.model.multi_modal_projector.named_parameters():
        value = torch.zeros(p.shape) if name.endswith("bias") else torch.randn(p.shape, generator=gen) * std
        parts[f"model.multi_modal_projector.{name}"] = value
    hidden = cfg.text_config.hidden_size
    if hasattr(skeleton.model, "image_newline"):  # LLaVA-NeXT's row separator for AnyRes images
        parts["model.image_newline"] = torch.randn(hidden, generator=gen) / hidden**0.5
    return parts


class _ShardWriter:
    """Tensors into model-NNNNN.safetensors files of at most SHARD_BYTES, plus the index."""

    def __init__(self, out: Path):
        self.out, self.index, self.pending, self.size, self.total = out, {}, {}, 0, 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.pending and self.size + nbytes > SHARD_BYTES:
            self.flush()
        self.pending[name], self.size, self.total = tensor.contiguous(), self.size + nbytes, self.total + nbytes

    def flush(self) -> None:
        from safetensors.torch import save_file

        file = f"model-{len(set(self.index.values())) + 1:05d}.safetensors"
        save_file(self.pending, self.out / file, metadata={"format": "pt"})
        self.index.update({name: file for name in self.pending})
        self.pending, self.size = {}, 0

    def close(self) -> None:
        if self.pending:
            self.flush()
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(self.index.items()))}
        (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def load_pretrained_parts(vision_id: str, llm_id: str, dtype=torch.float16) -> tuple[CLIPVisionModel, Qwen3ForCausalLM]:
    """The production tower and LLM from hub ids or local folders (nothing is downloaded here at test time)."""
    from transformers import AutoModelForCausalLM

    return (
        CLIPVisionModel.from_pretrained(vision_id, dtype=dtype),
        AutoModelForCausalLM.from_pretrained(llm_id, dtype=dtype),
    )


def quantization_config(compute_dtype=torch.float32, not_quantized: list[str] = NOT_QUANTIZED) -> BitsAndBytesConfig:
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=not_quantized,
    )


def load_base(base_dir: Path, prec: str = "fp32", device: str = "cpu", quantize: bool = True):
    """The saved base model on `device`: the LLM's linears in 4-bit nf4 (with `quantize`) computing in
    `prec`, everything else stored in `prec`'s dtype."""
    from transformers import AutoConfig

    dt, fam = dtype(prec), family_of(AutoConfig.from_pretrained(base_dir))
    extra = {"quantization_config": quantization_config(dt, fam.not_quantized)} if quantize else {}
    model = fam.model_class.from_pretrained(base_dir, device_map={"": device}, dtype=dt, **extra)
    _keep_cpu_lora_grads(model)
    return model


def train_in_fp32(model) -> None:
    """Trainable weights (LoRA, projector) in fp32 whatever the storage dtype: fp16 would round small updates away."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def ready_to_train(model, dev: str):
    """Trainable weights in fp32 and, on a GPU, gradient checkpointing (stage 1 and prefer: the gradient
    flows back through every frozen LLM layer, whose activations a T4 cannot hold)."""
    train_in_fp32(model)
    if dev == "cuda":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def load_qlora(base_dir: Path, lora_r: int, lora_alpha: int, prec: str = "fp32", device: str = "cpu"):
    """The saved base model with its LLM in 4-bit nf4, LoRA on the LLM's linears, the projector
    trainable (modules_to_save), the tower frozen and not quantized, the head not quantized."""
    return add_lora(load_base(base_dir, prec, device), lora_r, lora_alpha)


def add_lora(model, lora_r: int, lora_alpha: int):
    """LoRA on the LLM's linears (by regex: never the tower's), the family's projector trainable (none for
    Qwen3-VL, whose merger stays as pretrained), trainable weights in fp32."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        modules_to_save=list(family_of(model.config).trained_modules) or None,
    )
    model = get_peft_model(model, lora)  # wraps the 4-bit layers load_base already set up
    train_in_fp32(model)
    return model


def _keep_cpu_lora_grads(model) -> None:
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False  # keep LoRA gradients exact after eval-mode passes
