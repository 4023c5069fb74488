"""The one path from frames to captions, shared by training, evaluation and inference.

    feats = pooled_features(model, frames_uint8)             # frozen tower -> pooled, before the projector
    embeds = embed(model, input_ids, feats)                  # projector output placed at <video> tokens
    captions = generate(model, tokenizer, feats, prompt, ...)

The tower is frozen, so `pooled_features` can be cached (see features.py) and training never runs
the tower after the first epoch; the projector always runs, because it trains.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

from ..model.preprocess import normalize
from ..model.text import IM_END, encode


def base_model(model):
    """The LlavaNextVideoForConditionalGeneration under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@torch.no_grad()
def pooled_features(model, frames: np.ndarray) -> torch.Tensor:
    """uint8 (B, k, S, S, 3) -> (B, k * tokens_per_frame, vision_width): layer -2, CLS dropped, 2x2 pooled."""
    inner = base_model(model).model
    b, k = frames.shape[:2]
    tower = inner.vision_tower
    pixels = torch.from_numpy(normalize(frames.reshape(b * k, *frames.shape[2:]))).to(tower.dtype).to(tower.device)
    hidden = tower(pixels, output_hidden_states=True).hidden_states[inner.config.vision_feature_layer][:, 1:]
    pooled = inner.vision_resampler(hidden)
    return pooled.reshape(b, -1, pooled.shape[-1])


def embed(model, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Token embeddings with the projected video features at the `<video>` positions."""
    base = base_model(model)
    embeds = base.get_input_embeddings()(input_ids)
    projected = base.model.multi_modal_projector(features.to(embeds.dtype))
    mask = input_ids == base.config.video_token_index
    if int(mask.sum()) != projected.shape[0] * projected.shape[1]:
        raise ValueError(f"{int(mask.sum())} <video> tokens but {projected.shape[0] * projected.shape[1]} video features")
    return embeds.masked_scatter(mask.unsqueeze(-1), projected.reshape(-1, projected.shape[-1]))


def collate(encoded: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch: (input_ids, attention_mask, labels)."""
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
    return ids, mask, labels


def loss(model, encoded: list, features: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, int]:
    """Mean next-token loss on the answers of a batch, and how many tokens it saw."""
    ids, mask, labels = collate(encoded, pad_id)
    device = next(p for p in model.parameters() if p.requires_grad).device
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    out = model(inputs_embeds=embed(model, ids, features.to(device)), attention_mask=mask, labels=labels)
    return out.loss, int(mask.sum())


_SAMPLING = threading.Lock()


@torch.no_grad()
def generate(model, tokenizer, features: torch.Tensor, prompt: str, max_new_tokens: int, max_length: int,
             do_sample: bool = True, temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20,
             repetition_penalty: float = 1.05, seed: int = 0) -> list[str]:
    """Captions for a batch of pooled features, prompted exactly as in training (left-padded)."""
    n_tokens = features.shape[1]
    head = encode(tokenizer, prompt, None, n_tokens, max_length).input_ids
    ids = torch.tensor([head] * features.shape[0])
    mask = torch.ones_like(ids)
    base = base_model(model)
    with _SAMPLING:  # the seed is global: threads generating at once would draw from each other's stream
        torch.manual_seed(seed)
        out = base.generate(inputs_embeds=embed(model, ids, features), attention_mask=mask,
                            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p,
                            top_k=top_k, repetition_penalty=repetition_penalty,
                            eos_token_id=tokenizer.convert_tokens_to_ids(IM_END), pad_token_id=tokenizer.pad_token_id)
    return [tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in out]
