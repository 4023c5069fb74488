"""The validate stage: a Great Expectations gate over the manifest joined with a probe of every video.

    kocap stage validate

Rows that fail any check are quarantined (never deleted): `data/rejects/validate.parquet` lists
every failed check per row; the rest goes on in `data/validated/`. Data Docs (HTML) land in
`reports/validate/`, a summary by reason in `reports/validate.json`. The stage fails when the
quarantined share of clips exceeds `validate.max_reject_frac` or a split ends up empty.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..config import Config
from ..io import write_json, write_parquet
from .video import VideoError, probe, read_clip

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
_HANGUL = re.compile(r"[가-힣]")
_LETTER = re.compile(r"[^\W\d_]")


class ValidationGateError(RuntimeError):
    """Too much of the data failed validation, or a split is empty: the lifecycle stops here."""


def run(cfg: Config, root: Path, env=None) -> dict:
    clips = probe_clips(pd.read_parquet(root / paths.MANIFEST), root, cfg)
    images = probe_images(pd.read_parquet(root / paths.IMAGE_MANIFEST), root, cfg)
    docs = root / paths.VALIDATE_DOCS
    shutil.rmtree(docs, ignore_errors=True)
    failures = pd.concat([run_suite(clips, clip_expectations(cfg), "clips", docs),
                          run_suite(images, image_expectations(cfg), "images", docs)], ignore_index=True)
    rejects = failures.merge(pd.concat([clips[["row_id", "sample_id"]].assign(kind="clip"),
                                        images[["row_id", "sample_id"]].assign(kind="image")]), on="row_id")
    rejects = rejects[["kind", "sample_id", "check", "detail"]]
    kept_clips = clips[~clips["row_id"].isin(failures["row_id"])].drop(columns=_COMPUTED)
    kept_images = images[~images["row_id"].isin(failures["row_id"])].drop(columns=["row_id", "decode_error", "pixels",
                                                                              "hangul_frac"])
    summary = summarise(clips, kept_clips, images, kept_images, rejects)
    write_parquet(kept_clips.reset_index(drop=True), root / paths.VALID_CLIPS)
    write_parquet(kept_images.reset_index(drop=True), root / paths.VALID_IMAGES)
    write_parquet(rejects.reset_index(drop=True), root / paths.VALIDATE_REJECTS)
    write_json(root / paths.VALIDATE_REPORT, summary)
    gate(summary, cfg.validate_.max_reject_frac)
    return summary


# -- probing ----------------------------------------------------------------------------------
_COMPUTED = ["row_id", "decode_error", "caption_chars", "hangul_frac", "split_leak", "duplicate_id", "split_known"]


def probe_clips(manifest: pd.DataFrame, root: Path, cfg: Config) -> pd.DataFrame:
    """The manifest plus, per video: decode error (or None), frames, fps, size, duration."""
    rows = [_probe_one(root / p, cfg) for p in manifest["video_path"]]
    df = pd.concat([manifest.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    df.insert(0, "row_id", np.arange(len(df)))
    caption = df["caption_ko"].fillna("")
    df["caption_chars"] = caption.str.len()
    df["hangul_frac"] = [_hangul_share(c) for c in caption]
    df["duplicate_id"] = df["sample_id"].duplicated(keep="first")
    train_clips = set(df.loc[df["split"] == "train", "clip_id"])
    df["split_leak"] = (df["split"] == "val") & df["clip_id"].isin(train_clips)  # the val copy is quarantined
    df["split_known"] = df["split"].isin(SPLITS)
    return df


def _probe_one(path: Path, cfg: Config) -> dict:
    out = {"decode_error": None, "n_frames": 0, "fps": 0.0, "width": 0, "height": 0, "video_duration_s": 0.0}
    try:
        info = probe(path, cfg.validate_.max_pixels)
        out.update(fps=info.fps, width=info.width, height=info.height, video_duration_s=info.duration_s)
        _, idx = read_clip(path, 2)  # decode the first and the last frame: catches truncation
        out["n_frames"] = idx[-1] + 1  # the decoder's count, not the header's estimate
    except VideoError as exc:
        out["decode_error"] = str(exc)
    return out


def _hangul_share(text: str) -> float:
    letters = _LETTER.findall(text)
    return len(_HANGUL.findall(text)) / len(letters) if letters else 0.0


def probe_images(table: pd.DataFrame, root: Path, cfg: Config) -> pd.DataFrame:
    from PIL import Image

    df = table.rename(columns={"image_id": "sample_id"}).reset_index(drop=True)
    errors, sizes = [], []
    for p in df["image_path"]:
        try:
            with Image.open(root / p) as im:
                im.verify()
            with Image.open(root / p) as im:
                sizes.append(im.size)
            errors.append(None)
        except Exception as exc:  # PIL raises many types for garbage input
            errors.append(f"not a readable image ({type(exc).__name__})")
            sizes.append((0, 0))
    df.insert(0, "row_id", np.arange(len(df)) + 10_000_000)  # disjoint from clip row ids
    df["decode_error"] = errors
    df["width"], df["height"] = [s[0] for s in sizes], [s[1] for s in sizes]
    df["pixels"] = df["width"] * df["height"]
    df["hangul_frac"] = [_hangul_share(str(c)) for c in df["caption_ko"]]
    return df


# -- expectations -----------------------------------------------------------------------------
def clip_expectations(cfg: Config) -> list:
    import great_expectations.expectations as gxe

    v = cfg.validate_
    return [
        gxe.ExpectColumnValuesToBeNull(column="decode_error"),
        # at least one frame; how many the model samples is the frames stage's policy (frames.short_clip),
        # so validation stays independent of model params and is not redone when frames.num_frames changes
        gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="fps", min_value=v.min_fps, max_value=v.max_fps),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=16, max_value=16384),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=16, max_value=16384),
        gxe.ExpectColumnValuesToBeBetween(column="video_duration_s", min_value=0.05, max_value=v.max_duration_s),
        gxe.ExpectColumnValuesToBeBetween(column="caption_chars", min_value=v.min_caption_chars,
                                          max_value=v.max_caption_chars),
        gxe.ExpectColumnValuesToBeBetween(column="hangul_frac", min_value=v.min_hangul_frac),
        gxe.ExpectColumnValuesToBeInSet(column="duplicate_id", value_set=[False]),
        gxe.ExpectColumnValuesToBeInSet(column="split_leak", value_set=[False]),
        gxe.ExpectColumnValuesToBeInSet(column="split_known", value_set=[True]),
    ]


def image_expectations(cfg: Config) -> list:
    import great_expectations.expectations as gxe

    side = cfg.validate_.min_image_side
    return [
        gxe.ExpectColumnValuesToBeNull(column="decode_error"),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=side, max_value=16384),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=side, max_value=16384),
        gxe.ExpectColumnValuesToBeBetween(column="pixels", max_value=cfg.validate_.max_pixels),
        gxe.ExpectColumnValueLengthsToBeBetween(column="caption_ko", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="hangul_frac", min_value=cfg.validate_.min_hangul_frac),
    ]


CHECK_NAMES = {"n_frames": "too few frames", "fps": "fps out of range", "width": "width out of range",
               "height": "height out of range", "video_duration_s": "duration out of range",
               "caption_chars": "caption length out of bounds", "hangul_frac": "too little Hangul",
               "duplicate_id": "duplicate sample_id", "split_leak": "clip in both train and val",
               "split_known": "unknown split", "decode_error": "video does not decode", "caption_ko": "caption missing",
               "pixels": "resolution above validate.max_pixels"}


def run_suite(df: pd.DataFrame, expectations: list, name: str, docs: Path) -> pd.DataFrame:
    """Validate `df` with Great Expectations (Data Docs under `docs`); one row per failed check per row."""
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="file", project_root_dir=str(docs))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)  # quiet logs
    batch = (ctx.data_sources.add_or_update_pandas(name=name).add_dataframe_asset(name=name)
             .add_batch_definition_whole_dataframe("all"))
    suite = ctx.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    checkpoint = ctx.checkpoints.add_or_update(gx.Checkpoint(
        name=name, validation_definitions=[definition], actions=[gx.checkpoint.UpdateDataDocsAction(name="docs")],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row_id"]}))
    data = df.astype({c: "object" for c in df.columns if df[c].dtype == "string"})
    result = checkpoint.run(batch_parameters={"dataframe": data})
    failures = []
    for run_result in result.run_results.values():
        for r in run_result.results:
            column = r.expectation_config.kwargs["column"]
            for hit in r.result.get("unexpected_index_list") or []:
                failures.append({"row_id": int(hit["row_id"]), "check": CHECK_NAMES.get(column, column),
                                 "detail": _detail(column, hit.get(column))})
    return pd.DataFrame(failures, columns=["row_id", "check", "detail"])


def _detail(column: str, value) -> str:
    if isinstance(value, float):
        return f"{column}={value:.3g}"
    return str(value) if column == "decode_error" else f"{column}={value}"


# -- summary and gate -------------------------------------------------------------------------
def summarise(clips, kept_clips, images, kept_images, rejects) -> dict:
    clip_rejects = rejects[rejects["kind"] == "clip"]
    return {
        "clips": len(clips), "clips_kept": len(kept_clips),
        "clips_rejected": int(clip_rejects["sample_id"].nunique()),
        "reject_frac": round(1 - len(kept_clips) / len(clips), 4) if len(clips) else 1.0,
        "kept_by_split": {s: int((kept_clips["split"] == s).sum()) for s in SPLITS},
        "images": len(images), "images_kept": len(kept_images),
        "by_reason": {k: int(v) for k, v in rejects.groupby("check")["sample_id"].count().items()},
    }


def gate(summary: dict, max_reject_frac: float) -> None:
    empty = [s for s, n in summary["kept_by_split"].items() if n == 0]
    if empty:
        raise ValidationGateError(f"split {', '.join(empty)} is empty after validation; see {paths.VALIDATE_REJECTS} and {paths.VALIDATE_DOCS}")
    if summary["reject_frac"] > max_reject_frac:
        raise ValidationGateError(
            f"{summary['reject_frac']:.1%} of clips failed validation (limit validate.max_reject_frac="
            f"{max_reject_frac:.1%}); reasons: {json.dumps(summary['by_reason'], ensure_ascii=False)}; "
            f"see {paths.VALIDATE_REJECTS} and the Data Docs in {paths.VALIDATE_DOCS}")
