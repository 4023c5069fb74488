"""Decoding with a time limit per file: decord and PyAV have none, and a file that makes them hang
(ms-swift issue 9507) would stall its shard for ever. Files are decoded in a helper process; one that
runs past the limit, or crashes the decoder, is a reject with its reason, the helper is killed and a
fresh one takes the next file.

    frames, idx = decoder().load("clips", path, spec, span, timeout_s=120)

One helper per thread, kept for the next shard (its own imports take ~0.1 s, the decoders load on its
first file); it exits when its
parent closes the pipe or dies, or after a minute without work. It is a plain subprocess, not
multiprocessing: Dask's worker processes are daemonic and may not start multiprocessing children.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path

from .. import faults
from .video import FrameSpec, VideoError, load_clip, load_image

IDLE_EXIT = 3  # the helper's exit status after IDLE_S without a request
IDLE_S = 60
_local = threading.local()
_all: list[Decoder] = []


def decoder() -> Decoder:
    """This thread's decoder (threads of a Prefect task runner decode side by side)."""
    if getattr(_local, "decoder", None) is None:
        _local.decoder = Decoder()
        _all.append(_local.decoder)
    return _local.decoder


@atexit.register
def _stop_all() -> None:
    for each in _all:
        each.stop()


class Decoder:
    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._conn: _Duplex | None = None

    def load(self, kind: str, path: Path, spec: FrameSpec, span=None, timeout_s: float = 120):
        """(frames, indices) for a clip, (frames, None) for an image; VideoError for a bad, hanging or
        decoder-crashing file."""
        request = (kind, str(path), asdict(spec), span)
        try:
            status, *payload = self._ask(request, timeout_s)
        except _IdleExit:  # it left while the request was on its way: a fresh one takes it
            status, *payload = self._ask(request, timeout_s)
        if status == "ok":
            return payload
        if status == "bad":
            raise VideoError(payload[0])
        raise RuntimeError(f"decoding {path} failed: {payload[0]}")

    def _ask(self, request: tuple, timeout_s: float) -> tuple:
        if self._proc is None or self._proc.poll() is not None:
            self.stop()
            self._start()
        try:
            self._conn.send(request)
        except OSError:
            pass  # it is gone: the answer below says how
        if not self._conn.poll(timeout_s):
            self.stop(kill=True)  # a decoder stuck in native code can only be killed
            raise VideoError(f"decoding took longer than {timeout_s:g} s (frames.decode_timeout_s): stopped, set aside")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            idle = self._proc.wait() == IDLE_EXIT
            self.stop()
            if idle:
                raise _IdleExit from None
            raise VideoError("the decoder crashed on this file") from None

    def _start(self) -> None:
        to_helper_r, to_helper_w = os.pipe()
        from_helper_r, from_helper_w = os.pipe()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(to_helper_r), str(from_helper_w)],
            pass_fds=(to_helper_r, from_helper_w),
        )
        os.close(to_helper_r)
        os.close(from_helper_w)
        self._conn = _Duplex(from_helper_r, to_helper_w)

    def stop(self, kill: bool = False) -> None:
        if self._conn is not None:
            self._conn.close()  # the helper sees end of input and exits
        if self._proc is not None:
            if kill:
                self._proc.kill()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = self._conn = None


class _IdleExit(Exception):
    pass


class _Duplex:
    """Two one-way pipes as one connection (send on one fd, poll and receive on the other)."""

    def __init__(self, read_fd: int, write_fd: int):
        self._in, self._out = Connection(read_fd, writable=False), Connection(write_fd, readable=False)

    def send(self, obj) -> None:
        self._out.send(obj)

    def poll(self, timeout: float) -> bool:
        return self._in.poll(timeout)

    def recv(self):
        return self._in.recv()

    def close(self) -> None:
        self._in.close()
        self._out.close()


def _decode(kind: str, path: str, spec: dict, span) -> tuple:
    faults.hang("frames.decode", Path(path).name)
    spec = FrameSpec(**spec)
    if kind == "clips":
        return load_clip(Path(path), spec, tuple(span) if span else None)
    return load_image(Path(path), spec), None


def serve(read_fd: int, write_fd: int) -> None:
    """The helper's loop: one request in, one answer out, until the parent closes the pipe."""
    requests, answers = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    while True:
        if not requests.poll(IDLE_S):
            sys.exit(IDLE_EXIT)
        try:
            request = requests.recv()
        except EOFError:
            return
        try:
            answers.send(("ok", *_decode(*request)))
        except (VideoError, OSError, ValueError) as exc:  # the file's fault: a reject with this reason
            answers.send(("bad", str(exc)))
        except Exception as exc:  # noqa: BLE001 - kocap's fault: the parent raises it
            answers.send(("error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
