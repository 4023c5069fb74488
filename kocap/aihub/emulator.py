"""A loopback AI-Hub: serves a folder of AI-Hub-shaped data over HTTP with the real protocol.

    kocap aihub emulate ROOT --port 8765      # then AIHUB_BASE_URL=http://127.0.0.1:8765

ROOT holds one folder per dataset key, each with the dataset's top folder inside
(`ROOT/71849/123.대한민국 배경영상 .../01-1.정식개방데이터/Training/...`). Downloads come as a GNU tar
of `.partN` members named by byte offset. `Faults` switches on every misbehaviour in aihub.md so
tests can drive the real client through each of them.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .client import NOT_APPROVED, OUTDATED, OVERSEAS, UNKNOWN
from .tree import TreeFile, format_size, render_tree

EXPIRED_TEXT = "데이터 승인 유효기간 만료로 다운로드할 수 없습니다. 홈페이지에서 재신청 후 이용 바랍니다."


@dataclass
class Faults:
    tree_502_every: int = 2  # every Nth list/tree answer is HTTP 502 with a good body (0 = never)
    not_approved: set = field(default_factory=set)  # dataset keys
    expired: set = field(default_factory=set)  # dataset keys
    overseas: bool = False
    cut_short: dict = field(default_factory=dict)  # filekey -> how many more downloads to cut mid-stream
    cut_at_boundary: dict = field(default_factory=dict)  # filekey -> times to drop its members, no Content-Length
    corrupt: dict = field(default_factory=dict)  # filekey -> times to flip a byte of its data
    duplicate_parts: bool = False  # send every part set twice
    omit_content_length: bool = False


class Emulator:
    """Serve `root` on 127.0.0.1; use as a context manager. `requests` records each download's filekeys."""

    def __init__(self, root: Path, api_keys: set[str], part_size: int = 1 << 30, port: int = 0):
        self.root, self.api_keys, self.part_size = Path(root), set(api_keys), part_size
        self.faults = Faults()
        self.downloads: list[list[str]] = []
        self._count = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Emulator:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- the dataset view ----------------------------------------------------------------------
    def datasets(self) -> dict[str, str]:
        out = {}
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            top = next((t for t in d.iterdir() if t.is_dir()), None)
            out[d.name] = top.name.split(".", 1)[-1] if top else d.name
        return out

    def files(self, key: str) -> list[TreeFile]:
        base = self.root / key
        paths = sorted(p for p in base.rglob("*") if p.is_file())
        return [
            TreeFile(
                p.relative_to(base).as_posix(),
                filekey_of(key, p.relative_to(base).as_posix()),
                format_size(p.stat().st_size),
            )
            for p in paths
        ]

    def next_is_502(self) -> bool:
        with self._lock:
            self._count += 1
            n = self.faults.tree_502_every
            return bool(n) and self._count % n == 0

    def take(self, table: dict, key: str) -> bool:
        """Consume one use of a per-filekey fault."""
        with self._lock:
            if table.get(key, 0) > 0:
                table[key] -= 1
                return True
            return False


def filekey_of(dataset_key: str, relpath: str) -> str:
    """A stable filekey per file (AI-Hub's are six-digit numbers)."""
    return str(100000 + zlib.crc32(f"{dataset_key}/{relpath}".encode()) % 900000)


def _handler(emu: Emulator):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet; the tests read emu.downloads
            pass

        def do_GET(self):
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if url.path == "/info/dataset.do":
                body = "==================DataSet 목록==================\n"
                body += "".join(f"{k}, {t}\n" for k, t in emu.datasets().items()) + "=" * 50 + "\n"
                return self._text(502 if emu.next_is_502() else 200, body)
            if len(parts) == 2 and parts[0] == "info" and parts[1].endswith(".do"):
                return self._tree(parts[1][:-3])
            if len(parts) == 3 and parts[0] == "down":
                return self._download(
                    parts[1], parts[2].removesuffix(".do"), parse_qs(url.query).get("fileSn", [""])[0]
                )
            self._text(404, UNKNOWN)

        def do_POST(self):
            if urlparse(self.path).path == "/api/keyValidate.do":
                ok = self.headers.get("apikey") in emu.api_keys
                return self._text(
                    200,
                    json.dumps({"code": 200, "msg": "ok"} if ok else {"code": 401, "msg": "login fail"}),
                    "application/json",
                )
            self._text(404, UNKNOWN)

        def _tree(self, key: str):
            if not (emu.root / key).is_dir():
                return self._text(200, f"<html>{UNKNOWN}</html>")
            title = emu.datasets()[key]
            self._text(502 if emu.next_is_502() else 200, render_tree(title, emu.files(key)))

        def _download(self, version: str, key: str, sn: str):
            if version != "0.6":
                return self._text(502, f"{OUTDATED}의 aihubshell을 설치해주세요.")
            if self.headers.get("apikey") not in emu.api_keys:
                return self._text(401, json.dumps({"code": 401, "msg": "login fail"}), "application/json")
            if emu.faults.overseas:
                return self._text(502, f"{OVERSEAS}하고 있습니다.")
            if not (emu.root / key).is_dir():
                return self._text(502, UNKNOWN)
            if key in emu.faults.not_approved:
                return self._text(502, f"다운로드 서비스는 홈페이지(https://aihub.or.kr)에서 {NOT_APPROVED} 합니다.")
            if key in emu.faults.expired:
                return self._text(502, EXPIRED_TEXT)
            files = emu.files(key)
            wanted = files if sn == "all" else [f for f in files if f.filekey in set(sn.split(","))]
            emu.downloads.append([f.filekey for f in wanted])
            self._send_tar(key, wanted)

        def _send_tar(self, key: str, files: list[TreeFile]):
            with tempfile.TemporaryFile() as buf:
                cut, boundary = _write_tar(emu, key, files, buf)
                size = buf.tell()
                buf.seek(0)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-tar")
                if not (emu.faults.omit_content_length or boundary is not None):
                    self.send_header("Content-Length", str(size))
                self.end_headers()
                limit = boundary if boundary is not None else (size // 2 if cut else size)
                while limit > 0 and (chunk := buf.read(min(1 << 16, limit))):
                    self.wfile.write(chunk)
                    limit -= len(chunk)

        def _text(self, status: int, body: str, ctype: str = "text/plain; charset=utf-8"):
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _write_tar(emu: Emulator, key: str, files: list[TreeFile], buf) -> tuple[bool, int | None]:
    """Write the tar; return (cut mid-stream?, byte offset to stop at for a boundary cut or None)."""
    cut = any(emu.take(emu.faults.cut_short, f.filekey) for f in files)
    dropped = [f for f in files if emu.take(emu.faults.cut_at_boundary, f.filekey)]
    ordered = [f for f in files if f not in dropped] + dropped
    boundary = None
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for f in ordered:
            if f in dropped and boundary is None:
                boundary = tar.offset
            data = bytearray((emu.root / key / f.path).read_bytes())
            if emu.take(emu.faults.corrupt, f.filekey) and data:
                data[len(data) // 2] ^= 0xFF
            for _ in range(2 if emu.faults.duplicate_parts else 1):
                _add_parts(tar, f.path, bytes(data), emu.part_size)
    return cut, boundary


def _add_parts(tar: tarfile.TarFile, path: str, data: bytes, part_size: int) -> None:
    for off in range(0, max(len(data), 1), part_size):
        chunk = data[off : off + part_size]
        info = tarfile.TarInfo(f"{path}.part{off}")
        info.size, info.mtime, info.mode = len(chunk), 0, 0o644
        tar.addfile(info, io.BytesIO(chunk))
