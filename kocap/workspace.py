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
                raise WorkspaceBusy(
                    f"another kocap run holds {root} ({holder}); wait for it to finish, or run with "
                    f"--wait SECONDS to queue behind it"
                ) from None
            time.sleep(0.5)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
    handle.flush()
    _HELD.add(key)
    try:
        reap_orphaned_servers(os.environ.get("PREFECT_HOME", str(key / ".prefect")))
        yield
    finally:
        _HELD.discard(key)
        handle.seek(0)
        handle.truncate()  # the file names the live owner only
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def reap_orphaned_servers(prefect_home: str) -> list[int]:
    """Stop the temporary Prefect servers a killed kocap run left behind: processes started as this
    project's ephemeral server (PREFECT__SERVER_EPHEMERAL with this PREFECT_HOME) whose parent is gone.
    Linux only (/proc); elsewhere nothing is reaped."""
    import signal

    reaped = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            env = dict(
                v.split("=", 1)
                for v in (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in v
            )
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if env.get("PREFECT__SERVER_EPHEMERAL") != "1" or env.get("PREFECT_HOME") != str(prefect_home):
            continue
        if ppid == 1 or not Path(f"/proc/{ppid}").exists() or not _is_python(ppid):
            try:
                os.kill(int(proc.name), signal.SIGTERM)
                reaped.append(int(proc.name))
            except ProcessLookupError:
                pass
    return reaped


def _is_python(pid: int) -> bool:
    try:
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
