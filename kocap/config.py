"""One typed config object, loaded from params.yaml with `key.sub=value` overrides.

    cfg = load_config("params.yaml", ["data.sample.num_clips=60"])

Overrides are parsed as YAML scalars (`3` is an int, `true` a bool). `write_overrides` applies them
to params.yaml itself, keeping its comments, so DVC records exactly the values that ran.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SEED_MAX = 2**32 - 1  # what numpy and torch seeds accept


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AIHubParams(_Section):
    dataset_key: str = Field("71849", pattern=r"^[A-Za-z0-9_-]{1,64}$")  # it becomes part of a path
    base_url: str = Field("https://api.aihub.or.kr", pattern=r"^https?://[^\s/]+(/\S*)?$")
    filekeys: str = "all"
    retries: int = Field(2, ge=0, le=20)
    max_failed_frac: float = Field(0.25, ge=0, le=1)  # of the tree, by size, that may be missing before ingest stops
    timeout_s: float = Field(60, gt=0, le=3600)
    keep_archives: bool = False

    @field_validator("dataset_key", "filekeys", mode="before")
    @classmethod
    def _key_as_text(cls, v: Any) -> str:
        return str(v)

    def filekey_list(self) -> list[str] | None:
        """None means every file of the dataset."""
        if str(self.filekeys).strip().lower() == "all":
            return None
        return [k.strip() for k in str(self.filekeys).split(",") if k.strip()]


class SampleParams(_Section):
    seed: int = Field(7, ge=0, le=SEED_MAX)
    num_clips: int = Field(240, ge=2, le=50_000)
    val_frac: float = Field(0.15, gt=0, lt=1)
    clips_per_zip: int = Field(60, ge=1, le=10_000)
    num_images: int = Field(120, ge=0, le=50_000)
    size: int = Field(96, ge=32, le=1024)
    num_frames: int = Field(16, ge=1, le=1024)
    fps: int = Field(8, ge=1, le=240)
    part_size: int = Field(65536, ge=512, le=2**31)


class ImagesParams(_Section):
    """Where stage 1's Korean image-caption pairs come from (kocap/data/images.py)."""

    source: Literal["sample", "coco", "imagefolder"] = "sample"
    captions: str = ""  # coco: the caption JSON; imagefolder: the folder holding metadata.jsonl
    folder: str = ""  # coco: the image folder ("" = the caption file's folder)
    caption_field: str = "caption"  # imagefolder: the metadata.jsonl field with the caption

    @model_validator(mode="after")
    def _located(self):
        if self.source != "sample" and not self.captions:
            raise ValueError(f"data.images.captions must name the {self.source} caption file or folder")
        return self


class DataParams(_Section):
    source: Literal["sample", "aihub"] = "sample"
    aihub: AIHubParams = AIHubParams()
    sample: SampleParams = SampleParams()
    images: ImagesParams = ImagesParams()


class ValidateParams(_Section):
    max_reject_frac: float = Field(0.1, ge=0, le=1)
    min_caption_chars: int = Field(20, ge=1)
    max_caption_chars: int = Field(2000, ge=1)
    min_hangul_frac: float = Field(0.5, ge=0, le=1)  # share of Hangul among a caption's letters
    max_pixels: int = Field(3840 * 2160, ge=1, le=8 * 7680 * 4320)  # a larger frame is refused before decoding
    max_duration_s: float = Field(3600, gt=0, le=86400)
    min_fps: float = Field(1, gt=0, le=1000)
    max_fps: float = Field(240, gt=0, le=1000)
    min_image_side: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_caption_chars > self.max_caption_chars or self.min_fps > self.max_fps:
            raise ValueError("validate: a minimum is above its maximum (caption chars or fps)")
        return self


class FramesParams(_Section):
    num_frames: int = Field(8, ge=1, le=128)
    short_clip: Literal["pad", "reject"] = "pad"
    workers: int = Field(0, ge=0, le=256)  # 0 = one per core
    shard_size: int = Field(32, ge=1, le=10_000)  # clips per shard: the unit of parallel work and of resume
    decode_timeout_s: float = Field(120, ge=1, le=3600, allow_inf_nan=False)  # per file; past it: a reject


class TrainDefaults(_Section):
    """What a training stage takes from the preset unless params.yaml sets it (null = the preset's)."""

    lr: float = Field(gt=0, le=1, allow_inf_nan=False)
    batch_size: int = Field(ge=1, le=4096)
    grad_accum: int = Field(1, ge=1, le=4096)  # micro-batches per optimizer step
    lora_r: int | None = Field(None, ge=1, le=1024)  # stage 2 only
    lora_alpha: int | None = Field(None, ge=1, le=4096)
    epochs: int | None = Field(None, ge=1, le=1000)  # stage 2 only: passes over the training clips


class Preset(_Section):
    family: Literal["llava-next-video", "video-llava", "qwen3-vl"] = "llava-next-video"  # kocap/model/family.py
    vision: str = Field(min_length=1)  # hub id or local folder of the CLIP tower ("tiny": built from config)
    llm: str = Field(min_length=1)  # hub id or local folder of the Qwen3 LLM ("tiny": built from config)
    patch_size: int = Field(ge=1, le=64)
    image_size: int = Field(ge=8, le=1024)  # the tower's input size: frames are stored at this size
    pretrained: bool = False  # vision and llm name one trained video-language checkpoint, taken whole: no stage 1
    stage1: TrainDefaults = TrainDefaults(lr=1e-3, batch_size=8)
    stage2: TrainDefaults = TrainDefaults(lr=1e-3, batch_size=8, lora_r=64, lora_alpha=64, epochs=12)
    prefer: TrainDefaults = TrainDefaults(lr=3e-5, batch_size=4)  # pairs; 1e-4 and above cost facts (README)
    eval_batch_size: int = Field(16, ge=1, le=4096)  # clips per generation batch: what fits beside the KV cache

    @field_validator("image_size")
    @classmethod
    def _even_patch_grid(cls, size: int, info):
        patch = info.data.get("patch_size", 1)
        if size % patch:
            raise ValueError(f"must be a whole number of {patch}-px patches")
        pooled = info.data.get("family") in ("llava-next-video", "qwen3-vl")
        if pooled and (size // patch < 2 or (size // patch) % 2):
            raise ValueError(
                f"must be an even number (>= 2) of {patch}-px patches: the video pooler (merger) joins 2x2"
            )
        return size


class TinyLMParams(_Section):
    """The tiny preset's stand-in for a pretrained LLM: a BPE tokenizer and a small Qwen3 pre-trained on
    the training captions (text only, no video), so stage 2 starts from a model that speaks Korean."""

    vocab_size: int = Field(2000, ge=300, le=200_000)
    pretrain_steps: int = Field(300, ge=0, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=1, allow_inf_nan=False)
    batch_size: int = Field(16, ge=1, le=4096)
    seed: int = Field(0, ge=0, le=SEED_MAX)


class TinyTowerParams(_Section):
    """The tiny preset's stand-in for CLIP's pre-training: its tower learns, from single training frames and
    generated stills, which words their caption uses (bag of words). Frozen afterwards, as a CLIP tower is."""

    pretrain_steps: int = Field(3000, ge=0, le=1_000_000)
    lr: float = Field(3e-3, gt=0, le=1, allow_inf_nan=False)
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    # stills rendered by the sample's generator (a seed stream of their own, never a clip of the sample) beside
    # the training frames: CLIP's pre-training saw far more images than a task's clips (README, the tower)
    generated_frames: int = Field(4000, ge=0, le=1_000_000)


# A 7-8B model on a T4: one clip (image) a step, accumulated; stage 1 and DPO on the same footing.
_ONE_CLIP_A_STEP = dict(
    stage1=TrainDefaults(lr=1e-3, batch_size=1, grad_accum=16),
    stage2=TrainDefaults(lr=2e-4, batch_size=1, grad_accum=8, lora_r=16, lora_alpha=32, epochs=12),
    prefer=TrainDefaults(lr=5e-6, batch_size=1, grad_accum=16),
)


class ModelParams(_Section):
    preset: str = "tiny"
    presets: dict[str, Preset] = {
        "tiny": Preset(
            vision="tiny",
            llm="tiny",
            image_size=64,
            patch_size=8,
            stage2=TrainDefaults(lr=1e-3, batch_size=8, lora_r=64, lora_alpha=64, epochs=60),  # README: colour
        ),
        "qwen3-8b": Preset(
            vision="openai/clip-vit-large-patch14-336",
            llm="Qwen/Qwen3-8B",
            image_size=336,
            patch_size=14,
            **_ONE_CLIP_A_STEP,
            eval_batch_size=8,
        ),
        "qwen3-4b": Preset(
            vision="openai/clip-vit-large-patch14-336",
            llm="Qwen/Qwen3-4B",
            image_size=336,
            patch_size=14,
            stage1=TrainDefaults(lr=1e-3, batch_size=2, grad_accum=8),
            stage2=TrainDefaults(lr=2e-4, batch_size=2, grad_accum=4, lora_r=16, lora_alpha=32),
            prefer=TrainDefaults(lr=5e-6, batch_size=1, grad_accum=16),
        ),
        "tiny-video-llava": Preset(family="video-llava", vision="tiny", llm="tiny", image_size=64, patch_size=8),
        "video-llava-qwen3-8b": Preset(
            family="video-llava",
            vision="LanguageBind/Video-LLaVA-7B-hf",  # its video and image towers; Vicuna is left behind
            llm="Qwen/Qwen3-8B",
            image_size=224,
            patch_size=14,
            **_ONE_CLIP_A_STEP,
            eval_batch_size=4,  # 2,056 video tokens a clip: batch 8 reserved 13.17 of 13.5 GiB (README, GPU)
        ),
        "tiny-qwen3-vl": Preset(family="qwen3-vl", vision="tiny", llm="tiny", image_size=64, patch_size=8),
        "qwen3-vl-4b": Preset(
            family="qwen3-vl",
            vision="Qwen/Qwen3-VL-4B-Instruct",  # one pretrained checkpoint: tower, merger and LLM
            llm="Qwen/Qwen3-VL-4B-Instruct",
            image_size=448,
            patch_size=16,
            stage2=TrainDefaults(lr=2e-4, batch_size=2, grad_accum=4, lora_r=16, lora_alpha=32),
            prefer=TrainDefaults(lr=5e-6, batch_size=1, grad_accum=16),
            eval_batch_size=8,
        ),
        "qwen3-vl-8b": Preset(
            family="qwen3-vl",
            vision="Qwen/Qwen3-VL-8B-Instruct",
            llm="Qwen/Qwen3-VL-8B-Instruct",
            image_size=448,
            patch_size=16,
            stage2=TrainDefaults(lr=2e-4, batch_size=1, grad_accum=8, lora_r=16, lora_alpha=32, epochs=12),
            prefer=TrainDefaults(lr=5e-6, batch_size=1, grad_accum=16),
            eval_batch_size=8,
        ),
        "llava-next-video-7b": Preset(
            vision="llava-hf/LLaVA-NeXT-Video-7B-hf",  # the design's original choice as released: zero-shot rows
            llm="llava-hf/LLaVA-NeXT-Video-7B-hf",
            pretrained=True,
            image_size=336,
            patch_size=14,
            **_ONE_CLIP_A_STEP,
            eval_batch_size=8,
        ),
        "video-llava-7b": Preset(
            family="video-llava",
            vision="LanguageBind/Video-LLaVA-7B-hf",
            llm="LanguageBind/Video-LLaVA-7B-hf",
            pretrained=True,
            image_size=224,
            patch_size=14,
            **_ONE_CLIP_A_STEP,
            eval_batch_size=4,
        ),
    }
    prompt: str = Field("이 영상을 한국어로 상세히 묘사해주세요.", min_length=1)
    max_length: int = Field(2048, ge=16, le=262_144)
    too_long: Literal["error", "drop"] = "error"  # a sample over max_length is never truncated
    tiny_lm: TinyLMParams = TinyLMParams()
    tiny_tower: TinyTowerParams = TinyTowerParams()

    @model_validator(mode="after")
    def _known_preset(self):
        if self.preset not in self.presets:
            raise ValueError(f"model.preset {self.preset!r} is not one of {', '.join(self.presets)}")
        return self

    @property
    def chosen(self) -> Preset:
        return self.presets[self.preset]


Precision = Literal["auto", "fp32", "fp16", "bf16"]  # auto: bf16 on sm_80+, fp16 + loss scaling on a T4, fp32 on CPU


class Stage1Params(_Section):
    enabled: bool = True  # false: stage 2 starts from the assembled (fresh) projector; lineage says so
    epochs: int = Field(1, ge=1, le=1000)
    lr: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)  # null: the preset's (model.presets.NAME.stage1)
    batch_size: int | None = Field(None, ge=1, le=4096)
    grad_accum: int | None = Field(None, ge=1, le=4096)
    include_videos: bool = True  # also align on the video captions (cached features)
    max_length: int = Field(3584, ge=1, le=262_144)  # AnyRes images take up to 2,928 <image> positions at 336 px
    checkpoint_every: int = Field(50, ge=1, le=1_000_000)
    precision: Precision = "auto"
    seed: int = Field(0, ge=0, le=SEED_MAX)


class Stage2Params(_Section):
    # false: zero-shot. Nothing trains; the adapter is the identity LoRA (B = 0) around the stage-1 projector,
    # so evaluation, the gate and the registry measure the base as it is (lineage: the `stage2` tag)
    enabled: bool = True
    epochs: int | None = Field(None, ge=1, le=1000)  # null: the preset's (model.presets.NAME.stage2)
    lr: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)  # null: the preset's (model.presets.NAME.stage2)
    batch_size: int | None = Field(None, ge=1, le=4096)
    grad_accum: int | None = Field(None, ge=1, le=4096)
    lora_r: int | None = Field(None, ge=1, le=1024)
    lora_alpha: int | None = Field(None, ge=1, le=4096)
    checkpoint_every: int = Field(50, ge=1, le=1_000_000)
    precision: Precision = "auto"
    gradient_checkpointing: bool = True  # on GPU
    seed: int = Field(0, ge=0, le=SEED_MAX)


class PreferParams(_Section):
    """The preference step (DPO) after stage 2 (train/prefer.py): off, the lifecycle is stage 2's alone."""

    enabled: bool = False
    candidates: int = Field(4, ge=2, le=64)  # captions sampled per training clip
    max_clips: int = Field(0, ge=0, le=10_000_000)  # training clips to sample from (0 = all)
    temperature: float = Field(1.0, gt=0, le=100, allow_inf_nan=False)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(50, ge=1, le=1_000_000)
    repetition_penalty: float = Field(1.0, gt=0, le=100, allow_inf_nan=False)  # 1.0: let loops appear, to reject
    min_margin: float = Field(0.05, ge=0, le=100, allow_inf_nan=False)  # best - worst score below this: no pair
    pairs_per_clip: int = Field(1, ge=1, le=2016)  # 1: best vs worst; more: the next widest gaps too (train/prefer.py)
    heldout_frac: float = Field(0.2, ge=0, lt=1)  # pairs kept out of training: their preference accuracy is reported
    beta: float = Field(0.1, gt=0, le=100, allow_inf_nan=False)
    video_weight: float = Field(1.0, ge=0, le=100, allow_inf_nan=False)  # mDPO's conditional term (train/prefer.py)
    epochs: int = Field(3, ge=1, le=1000)
    lr: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)  # null: the preset's (model.presets.NAME.prefer)
    batch_size: int | None = Field(None, ge=1, le=4096)  # pairs per micro-batch
    grad_accum: int | None = Field(None, ge=1, le=4096)
    checkpoint_every: int = Field(50, ge=1, le=1_000_000)
    precision: Precision = "auto"
    seed: int = Field(0, ge=0, le=SEED_MAX)


class EvalParams(_Section):
    primary_metric: Literal["meteor", "cider", "bleu_4", "rouge_l"] = "meteor"
    max_new_tokens: Annotated[int, Field(ge=1, le=65_536)] | Literal["auto"] = (
        "auto"  # auto: the longest training caption in tokens, +25% + 16
    )
    batch_size: int | None = Field(None, ge=1, le=4096)  # null: the preset's eval_batch_size
    do_sample: bool = False  # deterministic (greedy + the repetition guard): the gate measures the model,
    # not the dice; true = Qwen3's chat sampling (temperature, top_p, top_k)
    temperature: float = Field(0.7, gt=0, le=100, allow_inf_nan=False)
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(20, ge=1, le=1_000_000)
    repetition_penalty: float = Field(1.05, gt=0, le=100, allow_inf_nan=False)  # the repetition guard
    seed: int = Field(0, ge=0, le=SEED_MAX)
    report_samples: int = Field(24, ge=0, le=1000)  # clips shown with their frame strip in the HTML report


class RegistryParams(_Section):
    model_name: str = Field("kocap", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # a registry name: no / or @
    min_improvement: float = Field(0.01, ge=0, le=10, allow_inf_nan=False)  # the gain must exceed this (CIDEr <= 10)
    min_unique_share: float = Field(0.5, ge=0, le=1)  # diversity: below this share of unique captions = collapse
    min_clips: int = Field(20, ge=1, le=1_000_000)  # a smaller validation set cannot crown a champion


class OpsParams(_Section):
    """How the lifecycle runs as a service; no stage reads these, so changing them retrains nothing."""

    work_pool: str = Field("local", min_length=1)  # the process pool that runs lifecycle and watch-aihub
    finetune_pool: str = ""  # "" = stage 2 inside the lifecycle; a pool name = the finetune deployment
    finetune_timeout_s: int = Field(86400, gt=0, le=30 * 86400)
    watch_cron: str = "0 3 * * *"  # watch-aihub: when to look for new AI-Hub data
    task_runner: Literal["thread", "dask"] = "thread"  # how frame and evaluation shards fan out
    dask_address: str = Field("", pattern=r"^$|^(tcp|tls|ucx)://[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}$")  # "" = local
    dask_workers: int = Field(2, ge=1, le=1024)


class Config(_Section):
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    frames: FramesParams = FramesParams()
    model: ModelParams = ModelParams()
    stage1: Stage1Params = Stage1Params()
    stage2: Stage2Params = Stage2Params()
    prefer: PreferParams = PreferParams()
    eval: EvalParams = EvalParams()
    registry: RegistryParams = RegistryParams()
    ops: OpsParams = OpsParams()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _preset_training_defaults(self):
        """Fill what stage1/stage2 leave null from the chosen preset: a preset carries its own lr, batch,
        accumulation and LoRA size, so switching preset never runs an 8B model with the tiny one's."""
        chosen = self.model.chosen
        for stage, defaults in (
            (self.stage1, chosen.stage1),
            (self.stage2, chosen.stage2),
            (self.prefer, chosen.prefer),
        ):
            for key, value in defaults.model_dump().items():
                if key in type(stage).model_fields and getattr(stage, key) is None:
                    setattr(stage, key, value)
        if self.eval.batch_size is None:
            self.eval.batch_size = chosen.eval_batch_size
        if None in (self.stage2.lora_r, self.stage2.lora_alpha, self.stage2.epochs):
            raise ValueError(
                f"stage2.lora_r/lora_alpha/epochs: set them or give preset {self.model.preset!r} stage2 defaults"
            )
        return self

    def section(self, name: str) -> dict:
        """A params section as plain data, keyed as in params.yaml."""
        return self.model_dump(by_alias=True, mode="json")[name]


def parse_override(text: str) -> tuple[list[str], Any]:
    """`data.sample.num_clips=60` -> (["data", "sample", "num_clips"], 60)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is not of the form key.sub=value")
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads `3e-4` (no dot) as a string; params.yaml and dvc.lock get the number
    return key.strip().split("."), value


_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return tree


class ParamsError(ValueError):
    """params.yaml or an override is not usable; the message says which key and why."""


def _read_yaml(path: Path) -> dict:
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ParamsError(f"{path} is not valid YAML ({path.name}{line}: {getattr(exc, 'problem', exc)})") from None
    if tree is not None and not isinstance(tree, dict):
        raise ParamsError(f"{path} must be a mapping of sections (data, model, ...), not {type(tree).__name__}")
    return tree or {}


def validated(tree: dict) -> Config:
    """The typed config, or a ParamsError listing every refused key with its reason."""
    from pydantic import ValidationError

    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(params)'}: {e['msg']}" for e in exc.errors()]
        raise ParamsError("params refused (params.yaml is unchanged):\n" + "\n".join(lines)) from None


def load_config(path: str | Path = "params.yaml", overrides: list[str] = ()) -> Config:
    """Read params.yaml (missing file = all defaults), apply overrides, validate types and ranges."""
    return validated(apply_overrides(_read_yaml(Path(path)), list(overrides)))


def write_overrides(path: str | Path, overrides: list[str]) -> Config:
    """Apply overrides to params.yaml in place (comments kept); return the validated config."""
    from ruamel.yaml import YAML  # a DVC dependency; round-trips comments

    path = Path(path)
    _read_yaml(path)  # a clear error for a syntax error, before ruamel's
    rt = YAML()
    rt.preserve_quotes = True
    tree = rt.load(path.read_text(encoding="utf-8")) if path.exists() else {}
    cfg = validated(apply_overrides(_plain(tree), list(overrides)))  # validate first: a refused value writes nothing
    apply_overrides(tree, list(overrides))
    _replace_atomically(path, lambda f: rt.dump(tree, f))
    return cfg


def _replace_atomically(path: Path, write) -> None:
    """Write a temporary file beside `path`, flush it to disk, then rename it over `path`: a failed
    write (full disk, a file-size limit, a kill) leaves the old file whole."""
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node
