"""One lifecycle run per workspace: a second run started at once stops with a clear message (or
waits, with `--wait`), so two runs never write the same outputs or dvc.lock at the same time."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

LOCK = ".kocap.lock"
_HELD: set[Path] = set()  # workspaces this process holds: re-entering (CLI -> flow) must not block itself


class WorkspaceBusy(RuntimeError):
    """Another kocap run holds this workspace."""


@contextlib.contextmanager
def exclusive(root: Path, wait_s: float = 0):
    """Hold the workspace lock (released by the OS even if the holder is killed); re-entrant."""
    key = Path(root).resolve()
    if key in _HELD:
        yield
        return
    path = key / LOCK
    handle = path.open("a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise WorkspaceBusy(f"another kocap run holds {root} ({holder}); wait for it to finish, or run with "
                                    f"--wait SECONDS to queue behind it") from None
            time.sleep(0.5)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
    handle.flush()
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
