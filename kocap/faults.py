"""Failpoints: `KOCAP_FAULT=NAME` kills this process with SIGKILL when it reaches point NAME.

Tests use them to cause a crash at an exact step (a kill right after a model version is created,
say) and then check that a rerun repairs everything. Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    if os.environ.get("KOCAP_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
