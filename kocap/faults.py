"""Failpoints: `KOCAP_FAULT=NAME` kills this process with SIGKILL when it reaches point NAME;
`KOCAP_FAULT=NAME:SUBJECT` makes a `hang` point never return for that subject (a file name, say).

Tests use them to cause a crash at an exact step (a kill right after a model version is created,
say) and then check that a rerun repairs everything. Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time


def point(name: str) -> None:
    if os.environ.get("KOCAP_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def hang(name: str, subject: str) -> None:
    """A call that never returns, as a decoder stuck on one file: only killing the process ends it."""
    if os.environ.get("KOCAP_FAULT") == f"{name}:{subject}":
        while True:
            time.sleep(3600)
