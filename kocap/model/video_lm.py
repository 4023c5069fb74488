"""The one path from frames to captions, shared by training, evaluation and inference.

    feats = pooled_features(model, frames_uint8)             # frozen tower -> pooled, before the projector
    embeds = embed(model, input_ids, feats)                  # projector output placed at <video> tokens
    captions = generate(model, tokenizer, feats, prompt, ...)

The tower is frozen, so `pooled_features` can be cached (see features.py) and training never runs
the tower after the first epoch; the projector always runs, because it trains.

Memory on a 16 GB GPU decides three choices here: the tower runs only up to `vision_feature_layer`
and on at most MAX_TOWER_FRAMES frames at a time; the loss computes vocabulary logits only where
there is an answer token (151,936 logits over ~1,700 positions would be ~1 GiB in fp32 alone); and
the projector output is cast to the embeddings' dtype, so fp16/bf16 autocast and half-precision
embeddings meet in `masked_scatter` with one dtype.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from .family import family_of, layer_hidden, project_into  # noqa: F401 (layer_hidden re-exported)
from .runtime import model_device
from .text import IGNORE, chat_of, encode

MAX_TOWER_FRAMES = 32  # frames per tower pass: bounds activation memory whatever the batch of clips


def base_model(model):
    """The family's model (e.g. LlavaNextVideoForConditionalGeneration) under a PEFT wrapper, or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@torch.no_grad()
def pooled_features(model, frames: np.ndarray, max_frames: int = MAX_TOWER_FRAMES) -> torch.Tensor:
    """uint8 (B, k, S, S, 3) -> (B, video_tokens, width): the frozen tower's features as the family caches
    them (LLaVA-NeXT-Video: layer -2, CLS dropped, 2x2 pooled; Video-LLaVA: all 257 kept; Qwen3-VL: its
    merger's output and DeepStack features), at most `max_frames` frames per tower pass."""
    inner = base_model(model).model
    return family_of(inner.config).video_features(inner, frames, max_frames)


def embed(model, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Token embeddings with the projected video features at the `<video>` positions."""
    return project_into(base_model(model), input_ids, features)


def video_media(model, n_tokens: int) -> dict:
    """`text.encode`'s media arguments for a clip of `n_tokens` video tokens in this model's family."""
    base = base_model(model)
    return family_of(base.config).video_media(base.config, n_tokens)


def collate(encoded: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch: (input_ids, attention_mask, labels)."""
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e)
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
    return ids, mask, labels


def loss(model, encoded: list, features: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, int]:
    """Mean next-token loss on the answers of a batch, and how many tokens it saw."""
    labels, inputs = _model_inputs(model, encoded, features, pad_id)
    return answer_loss(model, labels, **inputs), int(inputs["attention_mask"].sum())


def _model_inputs(model, encoded: list, features: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, dict]:
    """(labels, LM inputs) of a batch on the model's device: the family's inputs with the video features placed."""
    ids, mask, labels = collate(encoded, pad_id)
    return labels.to(model_device(model)), lm_inputs(model, ids, mask, features)


def lm_inputs(model, ids: torch.Tensor, mask: torch.Tensor, features: torch.Tensor) -> dict:
    """The family's keyword inputs (inner model and generate) for ids with their clips' video features."""
    base, device = base_model(model), model_device(model)
    return family_of(base.config).lm_inputs(base, ids.to(device), mask.to(device), features.to(device))


def answer_loss(model, labels: torch.Tensor, **inputs) -> torch.Tensor:
    """Next-token cross-entropy over the answer positions only: the LM head runs on those hidden
    states alone, never on the whole sequence. `inputs` go to the LLaVA model (embeddings, or ids
    with pixel values for stage-1 images). Same value as transformers' causal-LM loss (tested)."""
    logits, targets, _ = _answer_logits(model, labels, **inputs)
    return F.cross_entropy(logits, targets)


def answer_logprobs(model, labels: torch.Tensor, **inputs) -> torch.Tensor:
    """Per sample, the summed log-probability of its answer tokens: DPO's sequence log-probability,
    with the same answer masking (and the same head-on-answers-only memory bound) as `answer_loss`."""
    logits, targets, keep = _answer_logits(model, labels, **inputs)
    per_token = -F.cross_entropy(logits, targets, reduction="none")
    return torch.zeros(labels.shape[0], device=per_token.device).index_add(0, keep.nonzero()[:, 0], per_token)


def _answer_logits(model, labels: torch.Tensor, **inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fp32 logits at the answer positions, their target ids, the (B, T-1) mask that picked them)."""
    base = base_model(model)
    hidden = base.model(**inputs).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    return base.lm_head(hidden[:, :-1][keep]).float(), targets[keep], keep


def sequence_logprobs(model, encoded: list, features: torch.Tensor, pad_id: int) -> torch.Tensor:
    """`answer_logprobs` of encoded samples with their pooled video features (prepared as in `loss`)."""
    labels, inputs = _model_inputs(model, encoded, features, pad_id)
    return answer_logprobs(model, labels, **inputs)


_SAMPLING = threading.Lock()


class NonFiniteLogits(RuntimeError):
    """Generation met NaN or infinite logits: whatever it decoded next would be garbage, never a caption."""


class _FiniteLogits:
    """A logits processor that stops generation at the first non-finite logit. In fp16, Qwen-family
    activations can overflow: the logits turn NaN and greedy decoding emits token 0 over and over, which
    evaluation would otherwise score as a caption."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(scores).all():
            step = input_ids.shape[1]
            raise NonFiniteLogits(
                f"non-finite logits (dtype {scores.dtype}) at generation position {step}: the model overflowed "
                f"(fp16 on a T4 is the known cause); caption on a bf16-capable GPU or in fp32 on the CPU "
                f"(CUDA_VISIBLE_DEVICES=) rather than score garbage"
            )
        return scores


@torch.no_grad()
def generate(
    model,
    tokenizer,
    features: torch.Tensor,
    prompt: str,
    max_new_tokens: int,
    max_length: int,
    do_sample: bool = True,
    temperature: float = 0.7,
    top_p: float = 0.8,
    top_k: int = 20,
    repetition_penalty: float = 1.05,
    seed: int = 0,
) -> tuple[list[str], list[bool]]:
    """Captions for a batch of pooled features, prompted exactly as in training (left-padded), and for
    each whether the `max_new_tokens` budget cut it (no end-of-turn token)."""
    n_tokens = features.shape[1]
    head = encode(tokenizer, prompt, None, n_tokens, max_length, **video_media(model, n_tokens)).input_ids
    ids = torch.tensor([head] * features.shape[0])
    inputs = lm_inputs(model, ids, torch.ones_like(ids), features)
    base = base_model(model)
    end = tokenizer.convert_tokens_to_ids(chat_of(tokenizer).end)
    guards = [_FiniteLogits()]
    if "input_ids" in inputs:  # the prompt's ids reach the logits processors: the guard must skip them
        guards.append(RepetitionPenaltyLogitsProcessor(repetition_penalty, prompt_ignore_length=ids.shape[1]))
        repetition_penalty = None
    with _SAMPLING:  # the seed is global: threads generating at once would draw from each other's stream
        torch.manual_seed(seed)
        out = base.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            eos_token_id=end,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList(guards),
        )
    if "input_ids" in inputs:  # given ids (not embeddings), generate returns the prompt too
        out = out[:, ids.shape[1] :]
    texts = [tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in out]
    return texts, [end not in seq.tolist() for seq in out]
