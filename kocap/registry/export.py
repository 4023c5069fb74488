"""A registered version as a folder plain transformers loads: no kocap, no peft, no bitsandbytes.

    kocap export models:/kocap@champion exported/

The folder holds the model with the adapter merged (`AutoModelForImageTextToText`: the version's family,
LLaVA-NeXT-Video, Video-LLaVA or Qwen3-VL), the tokenizer with kocap's chat template, the frame
preprocessor (`AutoImageProcessor`: CLIP's torchvision-free variant, resizing and normalizing as the
family does; Qwen3-VL's patch layout is written out in the README, its processor needing torchvision), a
generation config with the version's decoding, and `kocap.json`: how many frames to take and where, the
prompt, and the repetition guard. Its README shows the plain-transformers code that gives the
same caption as `kocap caption` (a test checks it does).

The LLM's weights are the 4-bit nf4 weights the version was trained and served with, dequantized, with
LoRA merged into them: the same function, in full precision linears.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import Config
from ..data.video import sample_indices
from ..model.presets import video_tokens
from ..model.text import chat_of, load_tokenizer

USAGE = """# {name}: a kocap model for plain transformers

```python
import av, numpy as np, torch
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

folder = "{folder}"
model = AutoModelForImageTextToText.from_pretrained(folder).eval()
tokenizer, frames_to_pixels = AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)
with av.open("clip.mp4") as f:
    frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
picks = np.linspace(0, len(frames) - 1, {num_frames}).round().astype(int)  # kocap's sample_indices
pixels = frames_to_pixels([frames[i] for i in picks], return_tensors="pt")["pixel_values"]
messages = [{{"role": "user", "content": [{{"type": "video"}}, {{"type": "text", "text": "{prompt}"}}]}}]
prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
{family_code}
ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
# kocap's repetition guard counts the new tokens only
guard = RepetitionPenaltyLogitsProcessor({repetition_penalty}, prompt_ignore_length=ids.shape[1])
out = model.generate(input_ids=ids, **media(ids), logits_processor=[guard])
print(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
```
"""


def export_plain(base_dir: Path, adapter_dir: Path, cfg: Config, out: Path, origin: str = "") -> dict:
    """Write the merged model, tokenizer, preprocessor and recipe to `out`; return the recipe."""
    from peft import PeftModel
    from transformers import CLIPImageProcessorPil, GenerationConfig

    from ..model.build import load_base
    from ..model.family import family_of

    base = load_base(base_dir, "fp32", "cpu").dequantize()  # nf4 -> the same weights in plain linears
    model = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    tokenizer = load_tokenizer(str(base_dir))
    chat = chat_of(tokenizer)
    tokenizer.chat_template = chat.template
    e, size = cfg.eval, model.config.vision_config.image_size
    model.generation_config = GenerationConfig(
        max_new_tokens=int(e.max_new_tokens),
        do_sample=e.do_sample,
        **({"temperature": e.temperature, "top_p": e.top_p, "top_k": e.top_k} if e.do_sample else {}),
        eos_token_id=tokenizer.convert_tokens_to_ids(chat.end),
        pad_token_id=tokenizer.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    fam = family_of(model.config)
    mean, std = fam.pixel_mean_std
    CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, image_mean=mean, image_std=std
    ).save_pretrained(out)
    recipe = {
        "origin": origin,
        "num_frames": cfg.frames.num_frames,
        "frame_indices": f"round(linspace(0, n-1, k)); for 16 frames: {sample_indices(16, cfg.frames.num_frames)}",
        "short_clip": cfg.frames.short_clip,
        "prompt": cfg.model.prompt,
        "video_tokens": video_tokens(model.config, cfg.frames.num_frames),
        "repetition_penalty": e.repetition_penalty,
        "repetition_penalty_counts": "generated tokens only (prompt_ignore_length = the prompt's length)",
    }
    (out / "kocap.json").write_text(json.dumps(recipe, ensure_ascii=False, indent=2), encoding="utf-8")
    code = fam.plain_code(model.config, cfg.frames.num_frames).replace("{", "{{").replace("}", "}}")
    usage = USAGE.replace("{family_code}", code)
    (out / "README.md").write_text(usage.format(name=origin or "exported", folder=out, **recipe), encoding="utf-8")
    return recipe


def export_version(model_uri: str, out: Path) -> dict:
    """Export a registered version (`models:/NAME@ALIAS` or `models:/NAME/VERSION`)."""
    import mlflow

    from .base_ref import resolve

    if "@" in model_uri:  # an alias moves: the folder records the version it was made from
        from mlflow import MlflowClient

        name, alias = model_uri.removeprefix("models:/").split("@", 1)
        model_uri = f"models:/{name}/{MlflowClient().get_model_version_by_alias(name, alias).version}"
    local = Path(mlflow.artifacts.download_artifacts(model_uri)) / "artifacts"
    cfg = Config.model_validate(json.loads((local / "config.json").read_text(encoding="utf-8")))
    ref = local / "base_ref.json"  # versions registered before the base was stored once carry a copy
    base = resolve(json.loads(ref.read_text(encoding="utf-8"))) if ref.exists() else local / "base"
    return export_plain(base, local / "adapter", cfg, out, origin=model_uri)
