"""Tokenizer, chat template and prompt: one place, used by training, evaluation and inference.

The chat format is Qwen's ChatML in non-thinking form (an empty think block opens the answer):

    <|im_start|>user\n<video>\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n{caption}<|im_end|>

`<video>` is expanded to the model's video-token count here, before anything else sees the ids, and
a sample that does not fit `max_length` is never cut: it is an error naming it, or a counted drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VIDEO, IMAGE = "<video>", "<image>"
IM_START, IM_END, EOS = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK_EMPTY = "<think>\n\n</think>\n\n"
SPECIAL = [EOS, IM_START, IM_END, VIDEO, IMAGE, "<think>", "</think>"]
IGNORE = -100


class SampleTooLong(ValueError):
    """A sample whose media tokens + prompt + caption exceed max_length (never truncated)."""


def user_turn(prompt: str, media: str = VIDEO) -> str:
    """Everything before the answer: what generation is prompted with."""
    return f"{IM_START}user\n{media}\n{prompt}{IM_END}\n{IM_START}assistant\n{THINK_EMPTY}"


def answer(caption: str) -> str:
    return f"{caption}{IM_END}"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode(
    tokenizer,
    prompt: str,
    caption: str | None,
    media_tokens: int,
    max_length: int,
    sample_id: str = "",
    media: str = VIDEO,
) -> Encoded:
    """Token ids with the one media token expanded to `media_tokens`; labels only on the answer.

    `caption=None` encodes the generation prompt alone (inference).
    """
    head = tokenizer(user_turn(prompt, media), add_special_tokens=False)["input_ids"]
    media_id = tokenizer.convert_tokens_to_ids(media)
    if head.count(media_id) != 1:
        raise ValueError(f"the prompt must hold exactly one {media} token")
    at = head.index(media_id)
    head = head[:at] + [media_id] * media_tokens + head[at + 1 :]
    tail = tokenizer(answer(caption), add_special_tokens=False)["input_ids"] if caption is not None else []
    if len(head) + len(tail) > max_length:
        raise SampleTooLong(
            f"sample {sample_id!r} needs {len(head) + len(tail)} tokens ({media_tokens} {media} + "
            f"prompt + caption) but model.max_length is {max_length}; it is never truncated"
        )
    return Encoded(head + tail, [IGNORE] * len(head) + tail)


def train_tiny_tokenizer(texts: list[str], out: Path, vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on the Korean corpus (the tiny preset's stand-in for Qwen's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=IM_END, pad_token=EOS, additional_special_tokens=[VIDEO, IMAGE]
    )
    tok.save_pretrained(out)
    return tok


def load_tokenizer(source: str):
    """A saved tokenizer (tiny) or Qwen's from the hub / a folder, with `<video>` and `<image>` added."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    missing = [t for t in (VIDEO, IMAGE) if t not in tok.get_vocab()]
    if missing:  # add_tokens: the special-tokens keywords changed between transformers 4 and 5
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return tok
