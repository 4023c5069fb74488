"""Write the embedded sample: an AI-Hub-shaped dataset (71849 schema) and a stage-1 image set.

    kocap sample ROOT        # ROOT/71849/<top>/<version>/{Training,Validation}/{01.원천데이터,02.라벨링데이터}/*.zip

Deterministic for a seed: clip i depends only on (seed, i), so raising `num_clips` adds new zips
and leaves the earlier ones byte-identical (what an incremental AI-Hub update looks like).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from ..config import SampleParams
from ..data.video import encode_mp4
from .captions import describe, describe_image
from .scene import draw_scene, render

DATASET_KEY = "71849"
TOP = "123.대한민국 배경영상 상세 설명문 데이터"  # NNN is not the dataset key, as on AI-Hub
VERSION = "01-1.정식개방데이터"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class Cp949ZipInfo(zipfile.ZipInfo):
    """Stores the name as cp949 without the UTF-8 flag, as many AI-Hub zips do."""

    def _encodeFilenameFlags(self):
        return self.filename.encode("cp949"), self.flag_bits


def build_aihub_sample(root: Path, p: SampleParams) -> Path:
    """Write the sample dataset under `root/71849/`; return that folder."""
    base = root / DATASET_KEY / TOP / VERSION
    clips = [_clip(p, i) for i in range(p.num_clips)]
    for start in range(0, p.num_clips, p.clips_per_zip):
        chunk = clips[start : start + p.clips_per_zip]
        n = start // p.clips_per_zip + 1
        for split, prefix in (("Training", "T"), ("Validation", "V")):
            mine = [c for c in chunk if c["split"] == split]
            if mine:
                _write_zip(
                    base / split / "01.원천데이터" / f"{prefix}S_{n:02d}.배경영상.zip",
                    [(c["video_name"], encode_mp4(c["frames"], p.fps, options={"qscale": "3"})) for c in mine],
                    cp949=True,
                )
                _write_zip(
                    base / split / "02.라벨링데이터" / f"{prefix}L_{n:02d}.배경영상.zip",
                    [(c["label_name"], c["label_bytes"]) for c in mine],
                    cp949=False,
                )
    return root / DATASET_KEY


def _clip(p: SampleParams, i: int) -> dict:
    rng = np.random.default_rng([p.seed, i])
    scene = draw_scene(rng)
    frames = render(scene, p.size, p.num_frames, rng)
    split = "Validation" if rng.random() < p.val_frac else "Training"
    stem = f"{scene.scene}_{i:05d}"
    label = {
        "info": {"dataset": "대한민국 배경영상 상세 설명문 데이터", "source": "kocap embedded sample"},
        "video": {
            "file_name": f"{stem}.mp4",
            "duration": p.num_frames / p.fps,
            "fps": p.fps,
            "width": p.size,
            "height": p.size,
            "category": scene.scene,
        },
        "annotation": {
            ("description_ko" if i % 7 == 3 else "description_kr"): describe(scene, rng),
            "attributes": scene.as_dict(),
        },
    }
    text = json.dumps(label, ensure_ascii=False, indent=1)
    data = text.encode("cp949") if i % 5 == 2 else text.encode("utf-8-sig")  # AI-Hub ships both
    return {
        "split": split,
        "video_name": f"{stem}.mp4",
        "label_name": f"{stem}.json",
        "frames": frames,
        "label_bytes": data,
    }


def _write_zip(path: Path, members: list[tuple[str, bytes]], cp949: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            info = Cp949ZipInfo(name, ZIP_TIME) if cp949 else zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)


def build_image_set(out: Path, p: SampleParams) -> Path:
    """Stage-1 pairs: PNG stills of varied shapes plus `captions.jsonl` ({image, caption_ko})."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    shapes = ((p.size * 2, p.size * 2), (p.size * 3 // 2, p.size * 2), (p.size * 2, p.size * 3 // 2))
    rows = []
    for i in range(p.num_images):
        rng = np.random.default_rng([p.seed, 1_000_000 + i])
        scene = draw_scene(rng)
        h, w = shapes[i % len(shapes)]
        still = render(scene, h, 1, rng, width=w)[0]
        name = f"img_{i:05d}.png"
        Image.fromarray(still).save(out / name)
        rows.append({"image": name, "caption_ko": describe_image(scene, rng), "attributes": scene.as_dict()})
    (out / "captions.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return out
