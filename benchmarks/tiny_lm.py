"""The tiny preset's LM: what a pre-training step costs, and whether the pre-trained LM uses its context.

    python benchmarks/tiny_lm.py step            # median step time, today's 2x128 against the old 4x256
    python benchmarks/tiny_lm.py copy PROJECT    # PROJECT: a project after `assemble` (models/base, data/)

`step` times a training step (batch 16 x 300 tokens, vocab 1,700; median of 5 after a warm-up) of each
shape and prints the ratio to 4x256 measured in the same run. `copy` teacher-forces validation captions
through the assembled base's LM with a prompt of 16 caption words, once with the caption's colour word
among them and once without, and prints how often the LM ranks the right colour first among the five at
the caption's colour position: a LM that copies from its context scores higher with the word present.
Stage 2 then needs the projector only to say the colour in a form the LM copies.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: E402

SHAPES = {"4x256 (before)": (4, 256), "2x128 (tiny now)": (2, 128)}


def step_times() -> None:
    torch.set_num_threads(2)
    ids = torch.randint(0, 1700, (16, 300))
    medians = {}
    for name, (layers, hidden) in SHAPES.items():
        torch.manual_seed(0)
        model = Qwen3ForCausalLM(
            Qwen3Config(
                vocab_size=1700,
                hidden_size=hidden,
                intermediate_size=2 * hidden,
                num_hidden_layers=layers,
                num_attention_heads=hidden // 64,
                num_key_value_heads=max(1, hidden // 128),
                head_dim=64,
                tie_word_embeddings=True,
            )
        )
        opt, times = torch.optim.AdamW(model.parameters(), 1e-3), []
        for _ in range(6):
            t = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t)
        medians[name] = statistics.median(times[1:])
    base = medians["4x256 (before)"]
    for name, m in medians.items():
        print(f"{name:18s} {m:.3f} s/step  ratio to 4x256 {m / base:.2f}")


def copy_rate(project: Path, n: int = 40, words: int = 16) -> None:
    from transformers import LlavaNextVideoForConditionalGeneration

    from kocap import paths
    from kocap.config import load_config
    from kocap.data.rows import split_rows
    from kocap.model.text import answer, load_tokenizer, user_turn
    from kocap.sample.scene import COLORS

    prompt = load_config(project / "params.yaml").model.prompt
    tok = load_tokenizer(str(project / paths.BASE))
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(project / paths.BASE).eval()
    colour_ids = {c: tok(" " + c, add_special_tokens=False)["input_ids"][0] for c in COLORS}
    candidates = torch.tensor(list(colour_ids.values()))
    rng, hits = np.random.default_rng(0), {"colour word in the prompt": [], "not in the prompt": []}
    for caption in split_rows(project, "val")["caption_ko"][:n]:
        colour = next(c for c in COLORS if c in caption)
        for mode in hits:
            pool = [w for w in caption.split() if mode.startswith("colour") or colour not in w]
            picked = [pool[i] for i in sorted(rng.choice(len(pool), min(words, len(pool)), replace=False))]
            if mode.startswith("colour") and not any(colour in w for w in picked):
                picked[len(picked) // 2] = colour
            before = tok(user_turn(prompt, " ".join(picked)), add_special_tokens=False)["input_ids"]
            after = tok(answer(caption), add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                hidden = model.model.language_model(input_ids=torch.tensor([before + after])).last_hidden_state
                logits = model.lm_head(hidden)[0]
            at = len(before) + after.index(colour_ids[colour])
            hits[mode].append(list(colour_ids)[int(logits[at - 1, candidates].argmax())] == colour)
    for mode, h in hits.items():
        print(f"{mode:26s} right colour ranked first {np.mean(h):.2f} ({len(h)} captions; chance 0.20)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["step"]:
        step_times()
    elif sys.argv[1:2] == ["copy"] and len(sys.argv) == 3:
        copy_rate(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
