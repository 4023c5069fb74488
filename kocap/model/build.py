"""Assembling LLaVA-NeXT-Video with a Qwen3 LLM, and preparing it for QLoRA.

    model = assemble(vision, llm, tokenizer, num_frames)      # pretrained tower + LLM, fresh projector
    model = load_qlora(base_dir, lora_r=16, lora_alpha=32)    # 4-bit LLM, LoRA on the LLM only

Traps handled here (shared/notes/model.md and checks on transformers 5.24):
- `llm_int8_skip_modules` must name full module paths (`model.vision_tower`); the short names of
  older releases no longer match, and the tower and projector would be quantized.
- LoRA targets the language model by regex; `"all-linear"` or `["q_proj", ...]` would also hit CLIP.
- On CPU, an eval-mode forward repacks bnb 4-bit weights and LoRA gradients silently vanish:
  `support_avx512bf16_for_cpu` is turned off on every 4-bit layer.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import (BitsAndBytesConfig, CLIPVisionConfig, CLIPVisionModel, LlavaNextVideoForConditionalGeneration,
                          Qwen3Config, Qwen3ForCausalLM)

from .presets import llava_config
from .text import IMAGE, VIDEO

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
NOT_QUANTIZED = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def tiny_vision_config(image_size: int, patch_size: int) -> CLIPVisionConfig:
    return CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            image_size=image_size, patch_size=patch_size)


def tiny_text_config(vocab_size: int) -> Qwen3Config:
    return Qwen3Config(vocab_size=vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                       tie_word_embeddings=True)


def assemble(vision: CLIPVisionModel, llm: Qwen3ForCausalLM, tokenizer, num_frames: int
             ) -> LlavaNextVideoForConditionalGeneration:
    """A LLaVA-NeXT-Video model holding `vision` and `llm` weights, with a fresh projector."""
    if llm.get_input_embeddings().num_embeddings < len(tokenizer):
        llm.resize_token_embeddings(len(tokenizer))  # room for <video> and <image>
    cfg = llava_config(vision.config, llm.config, tokenizer.convert_tokens_to_ids(VIDEO),
                       tokenizer.convert_tokens_to_ids(IMAGE), num_frames)
    model = LlavaNextVideoForConditionalGeneration(cfg)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(llm.model.state_dict())
    model.lm_head.load_state_dict(llm.lm_head.state_dict())
    return model


def load_pretrained_parts(vision_id: str, llm_id: str, dtype=torch.float16) -> tuple[CLIPVisionModel, Qwen3ForCausalLM]:
    """The production tower and LLM from hub ids or local folders (nothing is downloaded here at test time)."""
    from transformers import AutoModelForCausalLM

    return (CLIPVisionModel.from_pretrained(vision_id, dtype=dtype),
            AutoModelForCausalLM.from_pretrained(llm_id, dtype=dtype))


def quantization_config(compute_dtype=torch.float32) -> BitsAndBytesConfig:
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                              bnb_4bit_use_double_quant=True, llm_int8_skip_modules=NOT_QUANTIZED)


def load_qlora(base_dir: Path, lora_r: int, lora_alpha: int, compute_dtype=torch.float32, device: str = "cpu"):
    """The saved base model with its LLM in 4-bit nf4, LoRA on the LLM's linears, the projector
    trainable (modules_to_save), the tower frozen and not quantized, the head not quantized."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model

    model = LlavaNextVideoForConditionalGeneration.from_pretrained(
        base_dir, quantization_config=quantization_config(compute_dtype), device_map={"": device},
        dtype=torch.float32)
    lora = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
                      modules_to_save=["multi_modal_projector"])
    model = get_peft_model(model, lora)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False  # keep LoRA gradients exact after eval-mode passes
    return model
