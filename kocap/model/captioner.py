"""A trained captioner: the base checkpoint + the trained adapter, with the one frames→caption path.

    cap = Captioner.load(base_dir, trained_adapter(cfg, root), cfg)
    cap.caption_frames(np.stack([cap.frames(p) for p in paths]))   # same frames, prompt and template as training

On a GPU it runs in the precision training used there (fp16 on a T4, bf16 on sm_80+), batched by
`eval.batch_size` (the preset's, sized to fit beside the KV cache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import paths
from ..config import Config
from ..data.video import FrameSpec, load_clip
from . import runtime
from .text import chat_of, load_tokenizer
from .video_lm import generate, pooled_features


def trained_adapter(cfg: Config, root: Path) -> Path:
    """The adapter evaluation, registration and serving take: the prefer stage's (DPO) when it is on,
    else stage 2's."""
    return root / (paths.PREFER_ADAPTER if cfg.prefer.enabled else paths.ADAPTER)


def generation_budget(tokenizer, captions: list[str]) -> int:
    """New tokens for `eval.max_new_tokens: auto`: the longest training caption (with its end-of-turn
    token) plus a quarter and 16, so a caption as long as the data's is never cut."""
    chat = chat_of(tokenizer)
    longest = max((len(tokenizer(chat.answer(c), add_special_tokens=False)["input_ids"]) for c in captions), default=0)
    return math.ceil(longest * 1.25) + 16


@dataclass
class Captioner:
    model: object
    tokenizer: object
    cfg: Config
    max_new_tokens: int = 256

    @classmethod
    def load(cls, base_dir: Path, adapter_dir: Path, cfg: Config, max_new_tokens: int | None = None) -> Captioner:
        from peft import PeftModel

        from ..model.build import load_base

        dev = runtime.device()
        base = load_base(base_dir, runtime.precision("auto", dev), dev)
        model = PeftModel.from_pretrained(base, adapter_dir).eval()
        budget = max_new_tokens or cfg.eval.max_new_tokens
        if budget == "auto":
            raise ValueError("eval.max_new_tokens is 'auto': pass the resolved budget (generation_budget)")
        return cls(model, load_tokenizer(str(base_dir)), cfg, int(budget))

    def caption_features(self, features: torch.Tensor, batch_size: int | None = None, seed: int = 0) -> list[str]:
        return self.caption_and_cut(features, batch_size, seed)[0]

    def caption_and_cut(
        self, features: torch.Tensor, batch_size: int | None = None, seed: int = 0
    ) -> tuple[list[str], list[bool]]:
        """Captions, and for each whether the generation budget cut it."""
        e, out, cut, size = self.cfg.eval, [], [], batch_size or self.cfg.eval.batch_size
        for i in range(0, len(features), size):
            texts, cuts = generate(
                self.model,
                self.tokenizer,
                features[i : i + size],
                self.cfg.model.prompt,
                self.max_new_tokens,
                self.cfg.model.max_length,
                do_sample=e.do_sample,
                temperature=e.temperature,
                top_p=e.top_p,
                top_k=e.top_k,
                repetition_penalty=e.repetition_penalty,
                seed=seed + i,
            )
            out, cut = out + texts, cut + cuts
        return out, cut

    def frames(self, path: Path) -> np.ndarray:
        """One video's model-ready frames (raises VideoError for a bad file)."""
        return load_clip(Path(path), FrameSpec.from_config(self.cfg))[0]

    def caption_frames(self, frames: np.ndarray, batch_size: int | None = None, seed: int = 0) -> list[str]:
        return self.caption_features(pooled_features(self.model, frames).float(), batch_size=batch_size, seed=seed)
