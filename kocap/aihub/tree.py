"""Parse AI-Hub's text answers: the dataset list and a dataset's file tree (aihub.md has the grammar)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

BRANCHES = ("├─", "└─")
_SIZE = re.compile(r"^\s*([\d.]+)\s*([KMGT]?B)\s*$", re.I)
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


@dataclass(frozen=True)
class TreeFile:
    path: str  # folders joined with '/', the top (dataset) folder included
    filekey: str
    display_size: str  # rounded display value such as '47 GB': never an exact size

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def approx_bytes(self) -> tuple[int, int]:
        """(low, high) bounds of the true size implied by the rounded display value."""
        m = _SIZE.match(self.display_size)
        if not m:
            return 0, 1 << 62
        value, unit = float(m.group(1)), _UNITS[m.group(2).upper()]
        return int(max(0.0, value - 1) * unit), int((value + 1) * unit)


def parse_dataset_list(text: str) -> dict[str, str]:
    """`86, 감성 대화 말뭉치` lines -> {key: title}; split at the first comma only (titles hold commas)."""
    out = {}
    for line in text.splitlines():
        key, sep, title = line.partition(",")
        if sep and key.strip().isdigit():
            out[key.strip()] = title.strip()
    return out


def split_notice(text: str) -> tuple[str, str]:
    """(notice, tree text): the notice sits between the 공지사항 line and the next ==== line."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "공지사항" in line), None)
    if start is None:
        return "", text
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("====")), len(lines) - 1)
    return "\n".join(lines[start + 1 : end]).strip(), "\n".join(lines[end + 1 :])


def parse_tree(text: str) -> list[TreeFile]:
    """Parse a dataset file tree into its files, each with its full folder path."""
    _, body = split_notice(text)
    stack: list[tuple[int, str]] = []  # (column of the branch, folder name)
    files = []
    for line in body.splitlines():
        col, name = _branch(line)
        if name is None:
            continue
        while stack and stack[-1][0] >= col:
            stack.pop()
        parts = [n for _, n in stack]
        if " | " in name:
            fname, size, key = (p.strip() for p in name.rsplit(" | ", 2))
            files.append(TreeFile("/".join(parts + [fname]), key, size))
        else:
            stack.append((col, name.strip()))
    return files


def _branch(line: str) -> tuple[int, str | None]:
    cols = [line.find(b) for b in BRANCHES if b in line]
    if not cols:
        return -1, None
    col = min(cols)
    return col, line[col + 2 :].rstrip()


def snapshot_id(files: list[TreeFile]) -> str:
    """A content id of a tree: the same files, keys and sizes give the same id."""
    rows = sorted((f.path, f.filekey, f.display_size) for f in files)
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()[:16]


def snapshot_to_json(files: list[TreeFile]) -> dict:
    return {"snapshot_id": snapshot_id(files), "files": [asdict(f) for f in files]}


def snapshot_from_json(data: dict) -> list[TreeFile]:
    return [TreeFile(**f) for f in data.get("files", [])]


def changed_files(old: list[TreeFile], new: list[TreeFile]) -> list[TreeFile]:
    """Files of `new` that are absent from `old` or whose filekey or size changed."""
    seen = {(f.path, f.filekey, f.display_size) for f in old}
    return [f for f in new if (f.path, f.filekey, f.display_size) not in seen]


def format_size(n: int) -> str:
    """Render bytes the way AI-Hub's tree does (rounded, integer, unit)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{max(1, round(n)) if unit != 'B' else n} {unit}"
        n /= 1024
    return f"{n} GB"


def render_tree(title: str, files: list[TreeFile], notice: str = "") -> str:
    """The inverse of parse_tree, in AI-Hub's exact layout (used by the loopback emulator)."""
    head = [
        "The contents are encoded in UTF-8 including Korean characters. ",
        "If the following contents are not output normally, ",
        "Please modify the character information of the OS. ",
        "=================공지사항=================== ",
        *([notice] if notice else []),
        "========================================== ",
        "",
    ]
    nested: dict = {}
    for f in files:
        node = nested
        for part in f.path.split("/")[:-1]:
            node = node.setdefault(part, {})
        node[f.name] = f
    return "\n".join(head + _render(nested, "    ")) + "\n"


def _render(node: dict, prefix: str) -> list[str]:
    lines = []
    items = list(node.items())
    for i, (name, child) in enumerate(items):
        last = i == len(items) - 1
        branch = "└─" if last else "├─"
        if isinstance(child, TreeFile):
            lines.append(f"{prefix}{branch}{name} | {child.display_size} | {child.filekey}")
        else:
            lines.append(f"{prefix}{branch}{name}")
            lines += _render(child, prefix + ("    " if last else "│  "))
    return lines
