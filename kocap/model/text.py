"""Tokenizer, chat template and prompt: one place, used by training, evaluation and inference.

The chat format is Qwen's ChatML in non-thinking form (an empty think block opens the answer):

    <|im_start|>user\n<video>\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n{caption}<|im_end|>

The original Vicuna-based LLaVA checkpoints (zero-shot rows) keep theirs, chosen by their tokenizer:

    <s>USER: <video>\n{prompt} ASSISTANT: {caption}</s>

`<video>` is expanded to the model's video-token count here, before anything else sees the ids, and
a sample that does not fit `max_length` is never cut: it is an error naming it, or a counted drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO, IMAGE = "<video>", "<image>"
IM_START, IM_END, EOS = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK_EMPTY = "<think>\n\n</think>\n\n"
SPECIAL = [EOS, IM_START, IM_END, VIDEO, IMAGE, "<think>", "</think>"]
IGNORE = -100


class SampleTooLong(ValueError):
    """A sample whose media tokens + prompt + caption exceed max_length (never truncated)."""


def user_turn(prompt: str, media: str = VIDEO) -> str:
    """Everything before the answer in Qwen's ChatML (`Chat.user_turn` for a tokenizer's own format)."""
    return CHATML.user_turn(prompt, media)


# The same turn as Jinja, for exported models read by plain transformers (`apply_chat_template`):
# a user message of one video and the prompt renders exactly as `user_turn` (tested).
CHAT_TEMPLATE = (
    "{% for m in messages %}" + IM_START + "{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'video' %}" + VIDEO + "\n{% elif part['type'] == 'image' %}" + IMAGE + "\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}" + IM_END + "\n{% endfor %}"
    "{% if add_generation_prompt %}" + IM_START + "assistant\n" + THINK_EMPTY + "{% endif %}"
)


def answer(caption: str) -> str:
    return CHATML.answer(caption)


@dataclass(frozen=True)
class Chat:
    """A chat format: the user turn before the answer, what ends the answer, and the same as Jinja."""

    name: str
    before_media: str  # the media, a newline and the prompt follow
    before_answer: str
    answer_prefix: str
    end: str  # the token that ends an answer (generation stops on it)
    template: str

    def user_turn(self, prompt: str, media: str = VIDEO) -> str:
        return f"{self.before_media}{media}\n{prompt}{self.before_answer}"

    def answer(self, caption: str) -> str:
        return f"{self.answer_prefix}{caption}{self.end}"


CHATML = Chat("chatml", f"{IM_START}user\n", f"{IM_END}\n{IM_START}assistant\n{THINK_EMPTY}", "", IM_END, CHAT_TEMPLATE)
# The original LLaVA-NeXT-Video-7B and Video-LLaVA-7B checkpoints (Vicuna): `USER: <video>\n... ASSISTANT:`, as
# their processors' chat templates render it, the BOS first as their processors' tokenizer call adds it.
VICUNA_TEMPLATE = (
    "<s>{% for m in messages %}{{ m['role'].upper() }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'video' %}" + VIDEO + "\n{% elif part['type'] == 'image' %}" + IMAGE + "\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
VICUNA = Chat("vicuna", "<s>USER: ", " ASSISTANT:", " ", "</s>", VICUNA_TEMPLATE)


def chat_of(tokenizer) -> Chat:
    """The tokenizer's chat format: Qwen's ChatML where it holds `<|im_start|>` (every Qwen3 LLM, the tiny
    one), else Vicuna's (the original LLaVA checkpoints, whose tokenizer is LLaMA's)."""
    return CHATML if IM_START in tokenizer.get_vocab() else VICUNA


@dataclass(frozen=True)
class Encoded:
    """One sample's ids, held as its parts: the media run is a count, not 1,152 (video) or up to ~2,900
    (AnyRes image) ids. As Python lists, 600,000 MS-COCO items would take ~28 GB of host memory; as
    int32 parts, a few hundred bytes each. `input_ids` and `labels` build the lists when a batch needs them."""

    before: np.ndarray  # prompt ids before the media run
    media_id: int
    media_tokens: int  # in all runs together
    after: np.ndarray  # prompt ids after it
    answer: np.ndarray  # the caption's ids with the end of turn: the only labelled part
    gaps: tuple[np.ndarray, ...] = ()  # ids between runs, where a family splits the media (Qwen3-VL: per frame pair)

    @property
    def prompt_length(self) -> int:
        return len(self.before) + self.media_tokens + sum(len(g) for g in self.gaps) + len(self.after)

    def __len__(self) -> int:
        return self.prompt_length + len(self.answer)

    @property
    def input_ids(self) -> list[int]:
        run = [self.media_id] * (self.media_tokens // (len(self.gaps) + 1))
        media = run + [i for gap in self.gaps for i in [*gap.tolist(), *run]]
        return [*self.before.tolist(), *media, *self.after.tolist(), *self.answer.tolist()]

    @property
    def labels(self) -> list[int]:
        return [IGNORE] * self.prompt_length + self.answer.tolist()


def encode(
    tokenizer,
    prompt: str,
    caption: str | None,
    media_tokens: int,
    max_length: int,
    sample_id: str = "",
    media: str = VIDEO,
    media_text: str | None = None,
) -> Encoded:
    """Token ids with the media token expanded to `media_tokens`; labels only on the answer.

    `media_text` is how the media stands in the user turn (default: the `media` token alone); a family may
    place the token several times (Qwen3-VL: once per frame pair), and the tokens are split evenly among them.
    `caption=None` encodes the generation prompt alone (inference).
    """
    chat = chat_of(tokenizer)
    head = tokenizer(chat.user_turn(prompt, media_text or media), add_special_tokens=False)["input_ids"]
    media_id = tokenizer.convert_tokens_to_ids(media)
    at = [i for i, t in enumerate(head) if t == media_id]
    if not at or media_tokens % len(at) or (media_text is None and len(at) != 1):
        raise ValueError(f"the prompt holds {len(at)} {media} tokens, which cannot share {media_tokens} evenly")
    gaps = tuple(_ids(head[a + 1 : b]) for a, b in zip(at, at[1:]))
    tail = tokenizer(chat.answer(caption), add_special_tokens=False)["input_ids"] if caption is not None else []
    enc = Encoded(_ids(head[: at[0]]), media_id, media_tokens, _ids(head[at[-1] + 1 :]), _ids(tail), gaps)
    if len(enc) > max_length:
        raise SampleTooLong(
            f"sample {sample_id!r} needs {len(enc)} tokens ({media_tokens} {media} + "
            f"prompt + caption) but model.max_length is {max_length}; it is never truncated"
        )
    return enc


def _ids(ids: list[int]) -> np.ndarray:
    return np.asarray(ids, dtype=np.int32)


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
    from transformers import AutoTokenizer

    return add_tokens(AutoTokenizer.from_pretrained(source), [VIDEO, IMAGE])


def add_tokens(tok, tokens: list[str]):
    """`tok` with those of `tokens` it lacks added as special tokens (a family's media markers)."""
    from tokenizers import AddedToken

    missing = [t for t in tokens if t not in tok.get_vocab()]
    if missing:  # add_tokens: the special-tokens keywords changed between transformers 4 and 5
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return tok
