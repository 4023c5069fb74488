"""The GPU check: kocap's production path on one GPU capped at 13.5 GiB (a T4 has 14.6 GiB usable, and the
CUDA context sits outside the cap), in minutes, offline.

    python benchmarks/gpu_check.py             # CUDA: ~5 min on an H100; prints one table at the end
    python benchmarks/gpu_check.py --smoke     # CPU: the same steps at small sizes (checks the script)

1. The real stage code on the micro preset (Qwen's real tokenizer, `kocap.model.micro`): assemble,
   align (stage 1), finetune (stage 2), evaluation's captioning and `Captioner` on a batch of frames,
   on a synthetic project (frames written directly: no video decoder is needed), MLflow off.
2. The production architectures (qwen3-8b, qwen3-4b, video-llava-qwen3-8b, qwen3-vl-8b, qwen3-vl-4b)
   with random weights drawn on the GPU (nothing is downloaded), loaded as `load_qlora` loads them
   (4-bit LLM, fp16 tower/embeddings/head, LoRA + projector in fp32): stage-2 peak memory and samples/s
   in fp16 with loss scaling through kocap's loss and loop (batch = the preset's, 8 frames, a ~420-token
   caption: ~1,600 tokens with 1,152 video tokens); stage-1 peak with one 1024x768 image through the
   family's image path (none for Qwen3-VL); the DPO step; evaluation tokens/s at the preset's eval batch.
3. assemble's host RAM for the 8B shapes: a random qwen3-8b-shaped checkpoint is written to disk and
   streamed into a LLaVA checkpoint in a subprocess; its peak RSS is reported.

Imports torch, transformers, peft, bitsandbytes, accelerate, tokenizers, safetensors, numpy, pandas,
pyarrow, pyyaml, pydantic and kocap only (plus PIL and requests, which kocap's stage modules import
and GPU images carry); no MLflow, Prefect, DVC or Great Expectations.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a bare copy of the repository

CAP_GIB = 13.5  # a T4's 14.6 GiB usable, less ~1 GiB of CUDA context that the cap does not count
EVAL_NEW_TOKENS = 540  # what evaluation generates on 71849 (the longest caption in Qwen tokens +25% +16)
PROMPT = "이 영상을 한국어로 상세히 묘사해주세요."  # the default model.prompt
CAPTION = ("맑은 하늘 아래 넓은 강변 공원이 펼쳐져 있고, 산책로를 따라 키 큰 나무들이 늘어서 있다. " * 12)[:575]
ROWS: list[dict] = []


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def record(part: str, what: str, value, note: str = "") -> None:
    ROWS.append({"part": part, "measure": what, "value": value, "note": note})
    say(f"{part}: {what} = {value} {note}")


def reset_peak(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(dev: str) -> str:
    """Peak allocated / peak reserved GiB: the cap bounds what the caching allocator reserves, so the
    reserved figure is the one that has to stay under it."""
    if dev != "cuda":
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} / {torch.cuda.max_memory_reserved() / 2**30:.2f}"


# ---------------------------------------------------------------- 1. the stage code on the micro preset


def micro_project(root: Path, clips: int = 12, images: int = 3) -> None:
    """What validate and frames would leave: validated tables, images on disk, frame shards + index."""
    from PIL import Image

    rng = np.random.default_rng(0)
    ids = [f"clip{i:03d}" for i in range(clips)]
    split = ["val" if i % 4 == 0 else "train" for i in range(clips)]
    captions = [f"{CAPTION[: 200 + 20 * i]}" for i in range(clips)]
    (root / "data/validated").mkdir(parents=True)
    pd.DataFrame(
        {"sample_id": ids, "split": split, "caption_ko": captions, "video_path": [f"{i}.mp4" for i in ids]}
    ).to_parquet(root / "data/validated/clips.parquet")
    (root / "data/images").mkdir(parents=True)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(root / f"data/images/{i}.png")
    pd.DataFrame(
        {
            "sample_id": [f"img{i}" for i in range(images)],
            "image_path": [f"data/images/{i}.png" for i in range(images)],
            "caption_ko": captions[:images],
        }
    ).to_parquet(root / "data/validated/images.parquet")
    (root / "data/frames/clips").mkdir(parents=True)
    np.save(root / "data/frames/clips/s0.npy", rng.integers(0, 255, (clips, 8, 56, 56, 3), dtype=np.uint8))
    pd.DataFrame({"sample_id": ids, "split": split, "shard": "clips/s0.npy", "offset": range(clips)}).to_parquet(
        root / "data/frames/clips.parquet"
    )


def stage_code_on_micro(dev: str) -> None:
    from kocap.config import load_config
    from kocap.env import RunEnv
    from kocap.evaluate import predict as evaluate
    from kocap.model.captioner import Captioner
    from kocap.model.micro import build_micro
    from kocap.train import align, assemble, finetune

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_micro(root / "models/micro")
        micro_project(root)
        cfg = load_config(
            Path(__file__).resolve().parents[1] / "params.yaml",
            ["model.preset=micro", "stage1.epochs=2", "stage2.epochs=3", "eval.batch_size=4"],
        )
        env = RunEnv({}, track=False)
        for name, stage in (("assemble", assemble), ("align", align), ("finetune", finetune)):
            reset_peak(dev)
            t = time.perf_counter()
            report = stage.run(cfg, root, env)
            extra = f"loss {report['final_loss']:.3f}, {report['precision']}" if "final_loss" in report else ""
            record("micro", f"{name} s", round(time.perf_counter() - t, 1), f"{extra} peak {peak_gib(dev)} GiB")
        t = time.perf_counter()
        predictions, cut, _, budget = evaluate.predict(cfg, root)
        record(
            "micro",
            "evaluate captions",
            len(predictions),
            f"budget {budget}, cut {sum(cut)}, {time.perf_counter() - t:.1f} s",
        )
        cap = Captioner.load(root / "models/base", root / "models/finetune/adapter", cfg, 16)
        frames = np.load(root / "data/frames/clips/s0.npy")[:3]
        record("micro", "caption (served path)", len(cap.caption_frames(frames)), "captions for 3 clips")


# ---------------------------------------------------------------- 2. the production architectures


def random_base(llm: str, dev: str, prec: str, smoke: bool, family_name: str = "llava-next-video"):
    """`load_base` of a production architecture of a family, with random weights drawn on `dev`: the
    LLM's linears in 4-bit nf4, the rest stored in `prec`'s dtype."""
    import bitsandbytes as bnb
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    from kocap.model import runtime
    from kocap.model.build import quantization_config, tiny_text_config, tiny_vision_config
    from kocap.model.family import family
    from kocap.model.presets import production_config

    vocab, fam = 151936, family(family_name)
    if smoke:
        text = tiny_text_config(4096)
        vision = fam.tiny_vision_config(64, 8, text) if fam.aligned else tiny_vision_config(64, 8)
        cfg = fam.config(vision, text, 4094, 4095, 8, start_id=4092, end_id=4093)
    else:  # <video>/<image> appended to Qwen's tokenizer, or Qwen3-VL's own <|video_pad|>/<|image_pad|>
        ids = (151656, 151655) if fam.aligned else (151669, 151670)
        cfg = production_config(llm, *ids, vocab_size=vocab, family_name=family_name)
    dt = runtime.dtype(prec)
    with torch.device("meta"):
        model = fam.model_class(cfg)
    model = replace_with_bnb_linear(
        model, modules_to_not_convert=fam.not_quantized, quantization_config=quantization_config(dt, fam.not_quantized)
    )
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = torch.randn(module.out_features, module.in_features, dtype=torch.float16, device=dev) * 0.02
            module.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", compress_statistics=True).to(
                dev
            )
            module.compute_dtype = dt
            module.support_avx512bf16_for_cpu = False
        else:
            for name, p in list(module.named_parameters(recurse=False)):
                setattr(
                    module,
                    name,
                    torch.nn.Parameter(torch.randn(p.shape, dtype=dt, device=dev) * 0.02, requires_grad=False),
                )
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    _materialise_buffers(model, cfg, dev)
    model.is_loaded_in_4bit = True  # as from_pretrained sets it: peft then wraps with its bnb 4-bit LoRA layers
    return model, cfg


def lora_layer_kind(model) -> str:
    """The class peft wrapped the LLM's linears with: `Linear4bit` (peft.tuners.lora.bnb) is what a
    quantized from_pretrained model gets; a generic `Linear` would measure another path."""
    kinds = {
        type(m).__module__ + "." + type(m).__name__
        for n, m in model.named_modules()
        if "language_model" in n and n.endswith("q_proj")
    }
    return ", ".join(sorted(kinds))


def _materialise_buffers(model, cfg, dev: str) -> None:
    """Rotary frequencies and position ids from a one-layer twin built on CPU (same configs)."""
    from kocap.model.family import family_of

    twin_cfg = copy.deepcopy(cfg)
    twin_cfg.text_config.num_hidden_layers = twin_cfg.vision_config.num_hidden_layers = 1
    twin_cfg.vision_config.depth, twin_cfg.vision_config.deepstack_visual_indexes = 1, [0]  # Qwen3-VL's tower
    twin_cfg.text_config.vocab_size = 1024
    buffers = dict(family_of(cfg).model_class(twin_cfg).named_buffers())
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner).register_buffer(leaf, buffers[name].to(dev), persistent=False)


class _Tok:
    """The few tokenizer calls kocap's encode/generate make, over fixed ids (no download): a prompt of
    ~20 tokens and 1 token per 1.4 characters of caption, as Qwen's BPE gives on Korean."""

    def __init__(self, cfg):
        vocab, video, image = cfg.text_config.vocab_size, cfg.video_token_id, cfg.image_token_id
        self.pad_token_id = vocab - 7
        self.media = {"<|im_start|>": vocab - 8, "<|im_end|>": vocab - 6, "<video>": video, "<image>": image}
        self.media |= {"<|video_pad|>": video, "<|image_pad|>": image}
        self.media |= {"<|vision_start|>": getattr(cfg, "vision_start_token_id", None) or vocab - 5}
        self.media |= {"<|vision_end|>": getattr(cfg, "vision_end_token_id", None) or vocab - 4}

    def __call__(self, text, add_special_tokens=False):
        if "<|im_start|>" not in text:  # a caption: 1 token per 1.4 characters
            return {"input_ids": [*range(1000, 1000 + len(text) * 10 // 14), self.media["<|im_end|>"]]}
        ids = []
        for part in re.split("(" + "|".join(map(re.escape, self.media)) + ")", text):
            ids += [self.media[part]] if part in self.media else [*range(1000, 1000 + len(part) // 3)]
        return {"input_ids": ids}

    def convert_tokens_to_ids(self, token):
        return self.media[token]

    def get_vocab(self):  # what kocap's chat_of reads: a Qwen tokenizer, so ChatML
        return self.media

    def decode(self, ids, skip_special_tokens=True):
        return f"{len(ids)} tokens"


def stage2_peak(preset: str, llm: str, dev: str, prec: str, smoke: bool, steps: int) -> None:
    from kocap.config import load_config
    from kocap.model.build import add_lora
    from kocap.model.text import encode
    from kocap.model.video_lm import loss, pooled_features, video_media
    from kocap.train.loop import LoopSpec, run_loop

    chosen = load_config(overrides=[f"model.preset={preset}"])
    p = chosen.stage2
    reset_peak(dev)
    model, cfg = random_base(llm, dev, prec, smoke, chosen.model.chosen.family)
    model = add_lora(model, p.lora_r, p.lora_alpha)
    kind = lora_layer_kind(model)
    if "bnb.Linear4bit" not in kind:
        raise RuntimeError(f"peft wrapped the 4-bit linears with {kind}, not its bnb 4-bit LoRA layers")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    record(preset, "weights GiB (alloc / reserved)", peak_gib(dev), kind.rsplit(".", 2)[-2] + " LoRA layers")
    size = cfg.vision_config.image_size
    frames = np.random.default_rng(0).integers(0, 255, (p.batch_size, 8, size, size, 3), dtype=np.uint8)
    feats = pooled_features(model, frames)
    tok = _Tok(cfg)
    encoded = [encode(tok, PROMPT, CAPTION, feats.shape[1], 4096, **video_media(model, feats.shape[1]))] * p.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        spec = LoopSpec(
            steps=steps,
            lr=p.lr,
            checkpoint_every=10**6,
            checkpoint_dir=Path(tmp),
            signature="gpu-check",
            precision=prec,
            device=dev,
        )
        rates = []

        def batch(m: int):
            value, tokens = loss(model, encoded, feats, tok.pad_token_id)
            return value, p.batch_size, tokens

        run_loop(model, batch, spec, lambda step, m: rates.append(m["samples_per_s"]))
    record(
        preset,
        "stage-2 peak GiB (alloc / reserved)",
        peak_gib(dev),
        f"batch {p.batch_size}, {len(encoded[0].input_ids)} tokens, {prec}",
    )
    record(preset, "stage-2 samples/s", round(statistics.median(rates[1:] or rates), 2), f"median of {steps} steps")
    stage1_peak(preset, model, cfg, dev, prec)
    dpo_peak(preset, model, feats[:1], encoded[0], tok.pad_token_id, dev, prec)
    eval_speed(preset, model, cfg, dev, prec, smoke)
    model = None  # free it before the next preset is measured
    reset_peak(dev)


def stage1_peak(preset: str, model, cfg, dev: str, prec: str) -> None:
    """One stage-1 step on a 1024x768 image through the family's image path (AnyRes for LLaVA-NeXT-Video;
    LoRA left on: an upper bound of stage 1, where only the projector trains)."""
    from kocap.model import runtime
    from kocap.model.family import family_of
    from kocap.model.presets import image_tokens
    from kocap.model.text import IMAGE, encode
    from kocap.model.video_lm import answer_loss

    if family_of(cfg).aligned:
        return record(preset, "stage-1 peak GiB (alloc / reserved)", "-", "stage 1 skipped: an aligned family")
    reset_peak(dev)
    h, w = (768, 1024) if cfg.vision_config.image_size > 64 else (96, 128)
    img = np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)
    enc = encode(_Tok(cfg), PROMPT, CAPTION, image_tokens(cfg, h, w), 4096, media=IMAGE)
    ids, labels = torch.tensor([enc.input_ids], device=dev), torch.tensor([enc.labels], device=dev)
    media = family_of(cfg).image_inputs(img, cfg.vision_config.image_size)
    media = {k: v.to(dev, runtime.dtype(prec) if v.is_floating_point() else None) for k, v in media.items()}
    with runtime.autocast(prec, dev):
        value = answer_loss(model, labels, input_ids=ids, **media)
    value.backward()
    model.zero_grad(set_to_none=True)
    record(preset, "stage-1 peak GiB (alloc / reserved)", peak_gib(dev), f"one {w}x{h} image, {ids.shape[1]} tokens")


def dpo_peak(preset: str, model, feats, chosen, pad_id: int, dev: str, prec: str) -> None:
    """One step of the prefer stage (DPO) at the preset's prefer batch: chosen and rejected captions of
    each clip in one forward pass, projector frozen, LoRA trained, reference log-probabilities given; with
    prefer.video_weight (mDPO's term) a third sequence a pair, the chosen caption on another video."""
    from kocap.config import load_config
    from kocap.model import runtime
    from kocap.model.video_lm import sequence_logprobs
    from kocap.train.prefer import dpo_loss

    params = load_config(overrides=[f"model.preset={preset}"]).prefer
    pairs, sides = params.batch_size, 3 if params.video_weight else 2
    frozen = [p for n, p in model.named_parameters() if ".multi_modal_projector." in n and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    rejected = replace(chosen, answer=chosen.answer[: len(chosen.answer) // 2])  # a shorter caption
    reset_peak(dev)
    with runtime.autocast(prec, dev):
        texts, videos = [chosen] * pairs + [rejected] * pairs, [feats.repeat(2 * pairs, 1, 1)]
        if sides == 3:  # the chosen caption again, on another (here: reversed) video
            texts, videos = texts + [chosen] * pairs, videos + [feats.flip(1).repeat(pairs, 1, 1)]
        logp = sequence_logprobs(model, texts, torch.cat(videos), pad_id).split(pairs)
        ref = [side.detach() - 1.0 for side in logp]
        value, _ = dpo_loss(logp[0], logp[1], ref[0], ref[1], beta=0.1)
        if sides == 3:
            value = value + params.video_weight * dpo_loss(logp[0], logp[2], ref[0], ref[2], beta=0.1)[0]
    value.backward()
    model.zero_grad(set_to_none=True)
    for p in frozen:
        p.requires_grad_(True)
    record(
        preset,
        "DPO step peak GiB (alloc / reserved)",
        peak_gib(dev),
        f"{pairs} pair(s) x {sides} sequences, {len(chosen)} tokens, {prec}",
    )


def eval_speed(preset: str, model, cfg, dev: str, prec: str, smoke: bool) -> None:
    from kocap.config import load_config
    from kocap.model import runtime
    from kocap.model.family import family_of
    from kocap.model.presets import video_tokens
    from kocap.model.video_lm import generate

    e = load_config(overrides=[f"model.preset={preset}"]).eval
    batch = e.batch_size
    model.eval()
    reset_peak(dev)
    feats = torch.randn(batch, video_tokens(cfg, 8), family_of(cfg).feature_width(cfg))
    new = EVAL_NEW_TOKENS if not smoke else 8
    t = time.perf_counter()
    with runtime.autocast(prec, dev):  # as evaluation decodes: greedy with the repetition guard
        generate(model, _Tok(cfg), feats, PROMPT, new, 4096, do_sample=False, repetition_penalty=e.repetition_penalty)
    if dev == "cuda":
        torch.cuda.synchronize()
    record(
        preset,
        "eval tokens/s",
        round(batch * new / (time.perf_counter() - t), 1),
        f"batch {batch}, {new} new tokens, peak {peak_gib(dev)} GiB (alloc / reserved)",
    )
    model.train()


# ---------------------------------------------------------------- 3. assemble's host RAM


def assemble_ram(smoke: bool) -> None:
    """Write a random qwen3-8b-shaped LLM checkpoint (bf16 safetensors shards) and a tower, then assemble
    them in a fresh process; report that process's peak RSS against the checkpoint's size."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen3Config

    from kocap.model.micro import build_micro
    from kocap.model.presets import CLIP_L_336, QWEN3

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_micro(root / "micro")  # Qwen's tokenizer
        shapes = dict(
            QWEN3["Qwen/Qwen3-8B"],
            **(
                {
                    "num_hidden_layers": 2,
                    "hidden_size": 256,
                    "intermediate_size": 512,
                    "num_attention_heads": 4,
                    "num_key_value_heads": 2,
                    "head_dim": 64,
                }
                if smoke
                else {}
            ),
        )
        text = Qwen3Config(**shapes)
        llm = root / "llm"
        llm.mkdir()
        text.save_pretrained(llm)
        size = _write_random_llm(text, llm, save_file)
        vision = (
            CLIPVisionConfig(**CLIP_L_336)
            if not smoke
            else CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
        )
        CLIPVisionModel(vision).save_pretrained(root / "clip")
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--assemble-child", tmp], capture_output=True, text=True, check=True
        )
        anon, rss = json.loads(out.stdout.strip().splitlines()[-1])
        record(
            "assemble",
            "peak host RAM GiB",
            anon,
            f"anonymous memory; LLM checkpoint {size / 2**30:.1f} GiB, "
            f"{time.perf_counter() - t:.0f} s (ru_maxrss {rss} GiB counts the mapped, reclaimable checkpoint pages)",
        )


def assemble_child(tmp: str) -> None:
    """In a fresh process: assemble, sampling anonymous memory (what must fit in RAM) every 20 ms."""
    import resource
    import threading

    from kocap.model.build import assemble_to_folder
    from kocap.model.text import load_tokenizer

    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    tok = load_tokenizer(f"{tmp}/micro/qwen3")
    assemble_to_folder(f"{tmp}/clip", f"{tmp}/llm", tok, 8, Path(tmp) / "base")
    done.set()
    watcher.join()
    print(json.dumps([round(peak[0] / 2**20, 2), round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)]))


def _write_random_llm(text, folder: Path, save_file) -> int:
    """Random bf16 weights in Qwen3's key layout, one layer per file (drawn on the GPU when there is one)."""
    from transformers import Qwen3ForCausalLM

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Qwen3ForCausalLM(text).state_dict().items()}
    groups: dict[str, dict] = {}
    for key, shape in shapes.items():
        group = key.split(".")[2] if key.startswith("model.layers.") else "rest"
        groups.setdefault(group, {})[key] = shape
    total = 0
    for i, items in enumerate(groups.values()):
        tensors = {k: (torch.randn(s, dtype=torch.bfloat16, device=dev) * 0.02).cpu() for k, s in items.items()}
        save_file(tensors, folder / f"model-{i:05d}.safetensors", metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
    return total


def table() -> str:
    width = max(len(r["measure"]) for r in ROWS)
    lines = [f"{'part':<10} {'measure':<{width}} {'value':>10}  note", "-" * (width + 40)]
    lines += [f"{r['part']:<10} {r['measure']:<{width}} {r['value']!s:>10}  {r['note']}" for r in ROWS]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="CPU, small sizes: checks the script itself")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument(
        "--skip",
        nargs="*",
        default=[],
        help="micro | qwen3-8b | qwen3-4b | video-llava-qwen3-8b | qwen3-vl-8b | qwen3-vl-4b | assemble",
    )
    ap.add_argument("--assemble-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.assemble_child:
        return assemble_child(args.assemble_child)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (use --smoke to check the script on CPU)")
    from kocap.model import runtime

    dev = "cpu" if args.smoke else "cuda"
    prec = "bf16" if args.smoke else "fp16"  # fp16 + loss scaling: what a T4 runs
    if dev == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, CAP_GIB * 2**30 / total))
        say(
            f"{torch.cuda.get_device_name(0)}, memory capped at {CAP_GIB} GiB; auto precision here: "
            f"{runtime.precision('auto', dev)} (a T4, sm_75, gets fp16)"
        )
    steps = {
        "micro": lambda: stage_code_on_micro(dev),
        "qwen3-8b": lambda: stage2_peak("qwen3-8b", "Qwen/Qwen3-8B", dev, prec, args.smoke, args.steps),
        "qwen3-4b": lambda: stage2_peak("qwen3-4b", "Qwen/Qwen3-4B", dev, prec, args.smoke, args.steps),
        "video-llava-qwen3-8b": lambda: stage2_peak(
            "video-llava-qwen3-8b", "Qwen/Qwen3-8B", dev, prec, args.smoke, args.steps
        ),
        **{
            vl: lambda vl=vl: stage2_peak(
                vl, f"Qwen/Qwen3-VL-{vl[-2:].upper()}-Instruct", dev, prec, args.smoke, args.steps
            )
            for vl in ("qwen3-vl-8b", "qwen3-vl-4b")
        },
        "assemble": lambda: assemble_ram(args.smoke),
    }
    failed = []
    for name, step in steps.items():
        if name in args.skip:
            continue
        say(f"--- {name}")
        try:
            step()
        except Exception as exc:  # one failed part must not hide the others' figures
            failed.append(name)
            record(name, "FAILED", type(exc).__name__, str(exc)[:300])
    print("\n" + table(), flush=True)
    print(json.dumps(ROWS, ensure_ascii=False))
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
