"""A trained captioner: the base checkpoint + the stage-2 adapter, with the one frames→caption path.

    cap = Captioner.load(base_dir, adapter_dir, cfg)
    cap.caption_frames(np.stack([cap.frames(p) for p in paths]))   # same frames, prompt and template as training
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..data.frames import FrameSpec, load_clip
from ..model.text import load_tokenizer
from ..train.video_lm import generate, pooled_features


@dataclass
class Captioner:
    model: object
    tokenizer: object
    cfg: Config

    @classmethod
    def load(cls, base_dir: Path, adapter_dir: Path, cfg: Config) -> "Captioner":
        from peft import PeftModel
        from transformers import LlavaNextVideoForConditionalGeneration

        from ..model.build import quantization_config

        device = "cuda" if torch.cuda.is_available() else "cpu"
        base = LlavaNextVideoForConditionalGeneration.from_pretrained(
            base_dir, quantization_config=quantization_config(), device_map={"": device}, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, adapter_dir).eval()
        return cls(model, load_tokenizer(str(base_dir)), cfg)

    def caption_features(self, features: torch.Tensor, batch_size: int = 16, seed: int = 0) -> list[str]:
        e, out = self.cfg.eval, []
        for i in range(0, len(features), batch_size):
            out += generate(self.model, self.tokenizer, features[i : i + batch_size], self.cfg.model.prompt,
                            e.max_new_tokens, self.cfg.model.max_length, do_sample=e.do_sample,
                            temperature=e.temperature, top_p=e.top_p, top_k=e.top_k,
                            repetition_penalty=e.repetition_penalty, seed=seed + i)
        return out

    def frames(self, path: Path) -> np.ndarray:
        """One video's model-ready frames (raises VideoError for a bad file)."""
        return load_clip(Path(path), FrameSpec.from_config(self.cfg))[0]

    def caption_frames(self, frames: np.ndarray) -> list[str]:
        return self.caption_features(pooled_features(self.model, frames).float())
