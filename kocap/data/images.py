"""Stage 1's Korean image-caption pairs, from the source params.yaml names (`data.images`):

    sample       the embedded sample's rendered stills (the default, what `make demo` uses)
    coco         a COCO-format caption file and its image folder: either COCO's own layout
                 ({"images": [{id, file_name}], "annotations": [{image_id, caption}]}) or the shape of
                 AI-Hub's Korean MS-COCO file, a list of {file_path | file_name, caption_ko: [...]}
    imagefolder  a Hugging Face `imagefolder` folder: metadata.jsonl lines {file_name, <caption_field>}

Every image is linked (or copied) into `data/raw/images-<source>/`, so DVC versions the image set
like the clips; one row per (image, caption). Nothing is judged here: the validation gate
quarantines a missing, corrupt, tiny or huge image and an empty or non-Korean caption, with reasons.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath

import pandas as pd

from ..io import temp_beside


def image_rows(source: str, captions: Path, folder: Path, caption_field: str = "caption") -> list[dict]:
    """(relative image path, caption) pairs of a source, in file order."""
    if source == "coco":
        return _coco(json.loads(captions.read_text(encoding="utf-8")))
    if source == "imagefolder":
        lines = (captions / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
        rows = []
        for line in filter(str.strip, lines):
            item = json.loads(line)
            rows += [{"file": item["file_name"], "caption": c} for c in _as_list(item.get(caption_field))]
        return rows
    raise ValueError(f"unknown image source {source!r}")


def _coco(data) -> list[dict]:
    if isinstance(data, dict):  # COCO's own layout
        files = {img["id"]: img["file_name"] for img in data.get("images", [])}
        return [
            {"file": files[a["image_id"]], "caption": a.get("caption", "")}
            for a in data.get("annotations", [])
            if a.get("image_id") in files
        ]
    rows = []  # AI-Hub's Korean MS-COCO: a list with several Korean captions per image
    for item in data:
        name = item.get("file_path") or item.get("file_name")
        rows += [{"file": name, "caption": c} for c in _as_list(item.get("caption_ko", item.get("captions")))]
    return rows


def _as_list(value) -> list[str]:
    if value is None:
        return [""]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def land_images(rows: list[dict], folder: Path, raw: Path, root: Path) -> pd.DataFrame:
    """Link each image into `raw` (kept: raw data is never overwritten) and return the images table."""
    out, counts = [], {}
    for row in rows:
        rel = PurePosixPath(str(row["file"]).replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts:  # never write outside raw/; the hash keeps two such
            digest = hashlib.sha256(rel.as_posix().encode()).hexdigest()[:12]  # files with one name apart
            rel = PurePosixPath(f"outside-{digest}-{rel.name}")
        dest = raw / rel
        _link(folder / str(row["file"]), dest)
        stem = rel.as_posix().rsplit(".", 1)[0].replace("/", "_")
        counts[stem] = counts.get(stem, 0) + 1
        out.append(
            {
                "image_id": f"{stem}-{counts[stem]}",
                "image_path": dest.relative_to(root).as_posix(),
                "caption_ko": row["caption"],
            }
        )
    return pd.DataFrame(out, columns=["image_id", "image_path", "caption_ko"])


def _link(src: Path, dest: Path) -> None:
    if dest.exists() or not src.is_file():  # a missing source stays missing: validation says so
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # another file system: copied beside, then renamed, so a killed copy never stands as the image
        tmp = temp_beside(dest)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
