"""Stage-2 QLoRA memory and speed for the production architectures on one GPU capped at a T4's size.

    python benchmarks/gpu_qlora.py                     # qwen3-8b and qwen3-4b, 20 steps each (needs CUDA)
    python benchmarks/gpu_qlora.py --smoke             # a small config on CPU: checks the script itself

Builds each architecture from its config with random weights (nothing is downloaded): the LLM's
linears in 4-bit nf4 (bitsandbytes), tower and head in fp16, projector and LoRA (r=16, the LLM only)
in fp32. Batch 1, 8 frames through the tower (no feature cache: the worst case), a 400-token caption,
gradient checkpointing, fp16 autocast with loss scaling, GPU memory capped at 15 GiB. Prints peak
memory and samples/s. Goal: qwen3-8b fits in 15 GiB.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(llm: str, device: str, smoke: bool):
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaNextVideoForConditionalGeneration
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    from kocap.model.build import LORA_TARGETS, NOT_QUANTIZED, quantization_config, tiny_text_config, tiny_vision_config
    from kocap.model.presets import llava_config, production_config

    vocab = 151936 + 2
    cfg = (llava_config(tiny_vision_config(64, 8), tiny_text_config(1024), 1022, 1023, 8) if smoke
           else production_config(llm, video_token_id=vocab - 2, image_token_id=vocab - 1, vocab_size=vocab))
    compute = torch.float16 if device == "cuda" else torch.float32
    with torch.device("meta"):
        model = LlavaNextVideoForConditionalGeneration(cfg)
    model = replace_with_bnb_linear(model, modules_to_not_convert=NOT_QUANTIZED,
                                    quantization_config=quantization_config(compute))
    for module in model.modules():  # materialise layer by layer: never a full-precision copy of the LLM
        if isinstance(module, bnb.nn.Linear4bit):
            w = torch.randn(module.out_features, module.in_features, dtype=torch.float16) * 0.02
            module.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", compress_statistics=True).to(device)
            module.compute_dtype = compute
            if module.bias is not None:
                module.bias = torch.nn.Parameter(torch.zeros(module.out_features, device=device), requires_grad=False)
            if device == "cpu":
                module.support_avx512bf16_for_cpu = False
        else:
            for name, p in list(module.named_parameters(recurse=False)):
                setattr(module, name, torch.nn.Parameter(torch.randn(p.shape, dtype=compute, device=device) * 0.02,
                                                         requires_grad=False))
    model.model.multi_modal_projector.float()  # trainable: kept in fp32
    _materialise_buffers(model, cfg, device)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS,
                      modules_to_save=["multi_modal_projector"])
    model = get_peft_model(model, lora)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    return model, cfg


def _materialise_buffers(model, cfg, device: str) -> None:
    """Rotary frequencies and position ids come from a one-layer twin built on CPU (same configs)."""
    import copy

    from transformers import LlavaNextVideoForConditionalGeneration

    twin_cfg = copy.deepcopy(cfg)
    twin_cfg.text_config.num_hidden_layers = twin_cfg.vision_config.num_hidden_layers = 1
    twin_cfg.text_config.vocab_size = 1024
    twin_cfg.video_token_index, twin_cfg.image_token_index = 1022, 1023
    buffers = dict(LlavaNextVideoForConditionalGeneration(twin_cfg).named_buffers())
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner).register_buffer(leaf, buffers[name.removeprefix("base_model.model.")].to(device),
                                                       persistent=False)


def run(llm: str, steps: int, device: str, smoke: bool) -> None:
    from kocap.model.presets import video_tokens

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, 15 * 2**30 / total))
    model, cfg = build(llm, device, smoke)
    size = cfg.vision_config.image_size
    n_video, caption = video_tokens(cfg, 8), 400
    ids = torch.cat([torch.full((1, 20), 5), torch.full((1, n_video), cfg.video_token_index),
                     torch.randint(10, 1000, (1, caption))], dim=1).to(device)
    labels = ids.clone()
    labels[:, : 20 + n_video] = -100
    video = torch.randn(1, 8, 3, size, size, dtype=torch.float16 if device == "cuda" else torch.float32, device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler(device, enabled=device == "cuda")
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        with torch.autocast(device, dtype=torch.float16, enabled=device == "cuda"):
            out = model(input_ids=ids, pixel_values_videos=video, labels=labels)
        scaler.scale(out.loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(f"{'smoke' if smoke else llm}: {ids.shape[1]} tokens, {steps} steps, loss {out.loss.item():.3f}, "
          f"peak GPU memory {peak:.2f} GiB (cap 15 GiB), {1 / statistics.median(times[2:] or times):.2f} samples/s",
          flush=True)
    del model, opt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="small config on CPU")
    args = ap.parse_args()
    if args.smoke:
        run("tiny", 3, "cpu", smoke=True)
        return
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (use --smoke to check the script on CPU)")
    for llm in ("Qwen/Qwen3-8B", "Qwen/Qwen3-4B"):
        run(llm, args.steps, "cuda", smoke=False)


if __name__ == "__main__":
    main()
