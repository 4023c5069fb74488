"""A training loop that can be killed at any moment and resumed: checkpoints every N steps hold
everything that trains (not just the adapter), the optimizer, the scheduler, the RNG states and the
data position, written atomically. A non-finite loss stops the run with a clear error.
"""

from __future__ import annotations

import logging
import math
import random
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model.runtime import autocast

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; training on it would only destroy the weights."""


@dataclass
class LoopSpec:
    steps: int
    lr: float
    checkpoint_every: int
    checkpoint_dir: Path
    signature: str  # params + data id: a checkpoint of another run is never resumed
    warmup_frac: float = 0.05
    precision: str = "fp32"  # fp32 | fp16 (T4: loss scaling) | bf16
    keep: int = 2
    accum: int = 1  # micro-batches per optimizer step (gradient accumulation)
    micro_batches: int = 0  # all micro-batches of the run (0: steps * accum); the last step may take fewer
    device: str = "cpu"


@dataclass(frozen=True)
class EpochSchedule:
    """Which samples micro-batch m trains on: a seeded permutation per epoch, so the data position of a
    resumed run is just the micro-batch index."""

    samples: int
    batch_size: int
    epochs: int
    seed: int

    @property
    def per_epoch(self) -> int:
        return math.ceil(self.samples / self.batch_size)

    @property
    def micro_batches(self) -> int:
        return self.per_epoch * self.epochs

    def indices(self, micro: int) -> np.ndarray:
        epoch, pos = divmod(micro, self.per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.samples)
        return order[pos * self.batch_size : (pos + 1) * self.batch_size]


def plan(samples: int, stage, checkpoint_dir: Path, signature: str, precision: str, device: str):
    """The epoch schedule over `samples` items and the loop spec of a training stage's params (stage1/stage2):
    one optimizer step per `grad_accum` micro-batches."""
    schedule = EpochSchedule(samples, stage.batch_size, stage.epochs, stage.seed)
    spec = LoopSpec(
        steps=-(-schedule.micro_batches // stage.grad_accum),
        lr=stage.lr,
        checkpoint_every=stage.checkpoint_every,
        checkpoint_dir=checkpoint_dir,
        signature=signature,
        precision=precision,
        accum=stage.grad_accum,
        micro_batches=schedule.micro_batches,
        device=device,
    )
    return schedule, spec


def code_digest() -> str:
    """The training and model code: a changed loop or model never resumes an older run's checkpoints."""
    import hashlib

    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted([*(package / "train").glob("*.py"), *(package / "model").glob("*.py")]):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def weight_files(folder: Path) -> tuple[Path, ...]:
    """A checkpoint's weight files (one file, or the shards of a large model)."""
    return tuple(sorted(Path(folder).glob("*.safetensors")))


def run_params(section: dict) -> dict:
    """A training section as far as it decides which run a checkpoint belongs to. Precision is left out:
    the remedy for an fp16 overflow (rerun with `precision: fp32`) continues from the last checkpoint,
    which holds only finite fp32 trainable weights, instead of starting over."""
    return {k: v for k, v in section.items() if k != "precision"}


def run_signature(*parts, files: tuple[Path, ...] = ()) -> str:
    """What makes two runs the same run: params and data (`parts`), the starting weights (`files`, by
    size and modification time: a rewritten base model never resumes older checkpoints) and the code."""
    import hashlib
    import json

    stamps = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] if f.exists() else [str(f)] for f in files]
    blob = json.dumps([parts, stamps, code_digest()], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_loop(
    model,
    batch_loss: Callable[[int], tuple[torch.Tensor, int, int]],
    spec: LoopSpec,
    on_step: Callable[[int, dict], None] = lambda step, m: None,
) -> dict:
    """Train for spec.steps optimizer steps; `batch_loss(m)` returns (loss, samples, tokens) for
    micro-batch m (step * accum + k): the micro-batch index is the data position. It may add a dict
    of its own figures (DPO's reward margin): their mean over the step's micro-batches joins the step's metrics."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    warmup = max(1, int(spec.steps * spec.warmup_frac))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup) * max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, spec.steps)))))
        ),
    )
    scaler = torch.amp.GradScaler(spec.device, enabled=spec.precision == "fp16")
    step = start = resume(model, opt, sched, spec, scaler)
    model.train()
    losses = []
    while step < spec.steps:
        t = time.perf_counter()
        value, samples, tokens, extra = accumulate(batch_loss, step, spec, scaler)
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        step += 1
        dt = time.perf_counter() - t
        losses.append(value)
        on_step(
            step,
            {
                "loss": value,
                "lr": sched.get_last_lr()[0],
                "samples_per_s": samples / dt,
                "tokens_per_s": tokens / dt,
                "peak_memory_mb": peak_memory_mb(),
                **extra,
            },
        )
        if step % spec.checkpoint_every == 0 or step == spec.steps:
            save_checkpoint(model, opt, sched, step, spec, scaler)
    return {"steps": step, "resumed_from": start, "final_loss": float(np.mean(losses[-10:])) if losses else None}


def accumulate(batch_loss, step: int, spec: LoopSpec, scaler) -> tuple[float, int, int, dict]:
    """Forward and backward over one step's micro-batches; returns (mean loss, samples, tokens, the mean
    of the figures batch_loss added)."""
    total = spec.micro_batches or spec.steps * spec.accum
    micro = range(step * spec.accum, min((step + 1) * spec.accum, total))
    value, samples, tokens, extra = 0.0, 0, 0, {}
    for m in micro:
        with autocast(spec.precision, spec.device):
            loss, n, t, *more = batch_loss(m)
        for k, v in (more[0] if more else {}).items():
            extra[k] = extra.get(k, 0.0) + v / len(micro)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"loss is {loss.item()} at step {step}: lower the learning rate, or use bf16/fp32 "
                f"(fp16 overflow is known for Qwen models trained in bf16)"
            )
        scaler.scale(loss / len(micro)).backward()
        value, samples, tokens = value + loss.item() / len(micro), samples + n, tokens + t
    return value, samples, tokens, extra


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return host_peak_mb()


def host_peak_mb() -> float:
    """Peak resident memory of this process on the host (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(model, opt, sched, step: int, spec: LoopSpec, scaler=None) -> Path:
    final = spec.checkpoint_dir / f"step-{step:07d}"
    tmp = spec.checkpoint_dir / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {
            "signature": spec.signature,
            "step": step,
            "trainable": trainable_state(model),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            # fp16's loss scale and its growth tracker: a resumed run scales (and skips steps) as the unbroken one
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        },
        tmp / "state.pt",
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)  # a checkpoint exists whole or not at all
    for old in sorted(spec.checkpoint_dir.glob("step-*"))[: -spec.keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(spec: LoopSpec) -> Path | None:
    found = sorted(spec.checkpoint_dir.glob("step-*")) if spec.checkpoint_dir.exists() else []
    return found[-1] if found else None


def resume(model, opt, sched, spec: LoopSpec, scaler=None) -> int:
    """Load the latest checkpoint of this run (same signature); returns the step to continue from."""
    path = latest_checkpoint(spec)
    if path is None:
        return 0
    state = torch.load(path / "state.pt", weights_only=False)
    if state["signature"] != spec.signature:
        log.info(
            "checkpoints in %s belong to another run (params or data changed): starting fresh", spec.checkpoint_dir
        )
        shutil.rmtree(spec.checkpoint_dir)
        return 0
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            named[name].copy_(value)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    log.info("resumed from %s (step %d of %d)", path.name, state["step"], spec.steps)
    return state["step"]
