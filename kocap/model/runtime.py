"""Where and in which number format the model runs: one answer for every stage.

    dev = device()                      # "cuda" when a GPU is present, else "cpu"
    prec = precision("auto", dev)       # bf16 on sm_80+, fp16 (+ loss scaling) on a T4 (sm_75), fp32 on CPU
    with autocast(prec, dev): ...

`torch.cuda.is_bf16_supported()` is True on a T4 (it counts emulation), so the choice goes by
compute capability. Half precision on the CPU is honoured when asked for explicitly (`bf16`): that is
how the CPU tests catch the dtype bugs a GPU would otherwise be the first to show.
"""

from __future__ import annotations

import contextlib
import os

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cores() -> int:
    """CPU cores this process may use (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_cores(workers: int) -> int:
    """Torch's intra-op threads for one of `workers` workers on this machine, so workers x threads <= cores:
    oversubscribed OpenMP threads made two runs at once each ~6x slower than one alone. A lone worker keeps
    torch's own default. A count already lowered (OMP_NUM_THREADS, as the test suite's parallel workers set it)
    is divided, not the cores. Returns the count."""
    if workers <= 1:
        return torch.get_num_threads()
    threads = max(1, min(cores(), torch.get_num_threads()) // workers)
    torch.set_num_threads(threads)
    return threads


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def precision(choice: str, on: str | None = None) -> str:
    """`auto`: bf16 where the GPU does it natively (compute capability 8.0+), fp16 below, fp32 on CPU."""
    if choice != "auto":
        return choice
    if (on or device()) != "cuda":
        return "fp32"
    return for_capability(torch.cuda.get_device_capability())


def for_capability(capability: tuple[int, int]) -> str:
    """bf16 natively from Ampere (8.0) on; a T4 (7.5) or V100 (7.0) gets fp16 with loss scaling."""
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


def dtype(prec: str) -> torch.dtype:
    return DTYPES[prec]


def autocast(prec: str, on: str | None = None):
    """Mixed precision for `prec` on device `on`; a no-op in fp32."""
    if prec == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(on or device(), dtype=DTYPES[prec])


def model_device(model) -> torch.device:
    """Where the model's inputs must go: the device of its token embeddings."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_input_embeddings().weight.device
