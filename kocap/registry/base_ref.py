"""The base checkpoint is stored once: a registered version points at it by its DVC content hash.

    ref = reference(cfg, root)        # at register time: {"md5": "<hash>.dir", "project": ..., "preset": ...}
    base_dir = resolve(ref)           # at load time: a folder holding exactly that base

A version holds the adapter (LoRA + projector), the tokenizer and the config; the base (~17 GB for
qwen3-8b) lives in DVC, which already versions it as the `assemble` stage's output. `resolve` looks
in the DVC cache of the project it runs in (a fresh clone after `dvc pull` has it), then of the
project that registered it, then fetches from that project's DVC remote, and as a last resort
re-assembles it from the preset's hub ids (production presets only), and uses that only when its
DVC hash equals the recorded one (a hub model revised since would otherwise serve a different base
under the version's name). The folder it returns, `.kocap-cache/base/<hash>/`, is made of hard links
into the cache: no second copy on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from .. import paths
from ..dvcops import cache_dir, cache_object
from ..io import file_md5

log = logging.getLogger(__name__)
FOLDER = ".kocap-cache/base"


class BaseNotFound(RuntimeError):
    """No DVC cache or remote holds the base checkpoint a model version points at."""


def reference(cfg, root: Path, hashes: dict[str, str]) -> dict:
    if paths.BASE not in hashes:
        raise BaseNotFound(f"{paths.BASE} has no DVC hash in dvc.lock: run the assemble stage (dvc repro) first")
    listing = cache_object(cache_dir(root), hashes[paths.BASE])
    if not listing.exists():
        raise BaseNotFound(
            f"{paths.BASE} is recorded as {hashes[paths.BASE]} in dvc.lock, which this project's DVC cache does "
            f"not hold: dvc.lock does not describe the base on disk; run `kocap stage assemble` (or `dvc repro`)"
        )
    preset = cfg.model.chosen
    entries = json.loads(listing.read_text(encoding="utf-8"))
    return {
        "md5": hashes[paths.BASE],
        "files": {e["relpath"]: e["md5"] for e in entries},  # names what differs if it must be re-assembled
        "project": str(Path(root).resolve()),
        "preset": cfg.model.preset,
        "family": preset.family,
        "vision": preset.vision,
        "llm": preset.llm,
        "num_frames": cfg.frames.num_frames,
    }


def resolve(ref: dict) -> Path:
    """A folder holding the base checkpoint with DVC hash ref["md5"]."""
    projects = [Path(p) for p in (os.environ.get("KOCAP_PROJECT"), os.getcwd(), ref["project"]) if p]
    projects = [p for p in dict.fromkeys(p.resolve() for p in projects) if (p / ".dvc").is_dir()]
    for project in projects:
        found = _from_cache(project, ref["md5"])
        if found:
            return found
    for project in projects:
        if _fetch(project, ref["md5"]):
            return _from_cache(project, ref["md5"])
    if ref["llm"] != "tiny" and projects:
        return _reassemble(projects[0], ref)
    raise BaseNotFound(
        f"base checkpoint {ref['md5']} is in no DVC cache or remote of {[str(p) for p in projects]}: "
        f"in the project, `git checkout` the version's commit and `dvc pull {paths.BASE}`, "
        f"or set KOCAP_PROJECT to a project that has it"
    )


def _from_cache(project: Path, md5: str) -> Path | None:
    """Link the files of the `.dir` object into .kocap-cache/base/<md5>/ (once); None if any is missing."""
    out = project / FOLDER / md5
    if (out / ".complete").exists():
        return out
    cache = cache_dir(project)
    listing = cache_object(cache, md5)
    if not listing.exists():
        return None
    entries = json.loads(listing.read_text(encoding="utf-8"))
    if not all(cache_object(cache, e["md5"]).exists() for e in entries):
        return None
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for entry in entries:
        target = tmp / entry["relpath"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(cache_object(cache, entry["md5"]), target)
        except OSError:  # another file system: copy
            shutil.copyfile(cache_object(cache, entry["md5"]), target)
    (tmp / ".complete").write_text(md5, encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _fetch(project: Path, md5: str) -> bool:
    """Pull the `.dir` object and its files from the project's default DVC remote into its cache."""
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo

    try:
        with Repo(str(project)) as repo:
            repo.cloud.pull([HashInfo("md5", md5)])
            listing = cache_object(Path(repo.cache.local.path), md5)
            if not listing.exists():
                return False
            entries = json.loads(listing.read_text(encoding="utf-8"))
            repo.cloud.pull([HashInfo("md5", e["md5"]) for e in entries])
        return True
    except Exception as exc:  # no remote configured, unreachable, not there: try the next place
        log.info("base %s not fetched from %s's DVC remote: %s", md5, project, exc)
        return False


def _reassemble(project: Path, ref: dict) -> Path:
    """Rebuild the base from the preset's tower and LLM (the projector the version trained is in its adapter)."""
    from ..model.build import assemble_to_folder
    from ..model.family import family
    from ..model.presets import source
    from ..model.text import load_tokenizer

    out = project / FOLDER / f"{ref['md5']}-reassembled"
    if not (out / ".complete").exists():
        log.warning(
            "base %s not in any DVC cache or remote: re-assembling it from %s + %s",
            ref["md5"],
            ref["vision"],
            ref["llm"],
        )
        tokenizer = load_tokenizer(source(project, ref["llm"]))
        assemble_to_folder(
            source(project, ref["vision"]),
            source(project, ref["llm"]),
            tokenizer,
            ref["num_frames"],
            out,
            names=(ref["vision"], ref["llm"]),
            fam=family(ref.get("family", "llava-next-video")),  # versions before families: LLaVA-NeXT-Video
        )
        tokenizer.save_pretrained(out)
        verify(out, ref)
        (out / ".complete").write_text(ref["md5"], encoding="utf-8")
    return out


def verify(folder: Path, ref: dict) -> None:
    """A re-assembled base is used only when it is, byte for byte, the one the version recorded."""
    got, files = dir_md5(folder)
    if got == ref["md5"]:
        return
    recorded = ref.get("files", {})
    differ = sorted(f for f in files.keys() | recorded.keys() if files.get(f) != recorded.get(f)) if recorded else []
    raise BaseNotFound(
        f"the base re-assembled from {ref['vision']} + {ref['llm']} hashes to {got}, not the {ref['md5']} this "
        f"version was trained on{f' (files that differ: {differ[:8]})' if differ else ''}: a model on the hub "
        f"may have changed since. Restore a DVC cache or remote that holds {ref['md5']} (`dvc pull {paths.BASE}` "
        f"at the version's commit), or pin the preset's sources to the revisions it was trained with"
    )


def dir_md5(folder: Path) -> tuple[str, dict[str, str]]:
    """DVC's hash of a folder: the md5 of its `.dir` listing (each file's md5 and relpath, sorted by
    relpath, as sorted-key JSON) plus ".dir"; and the per-file md5s."""
    files = {
        p.relative_to(folder).as_posix(): file_md5(p)
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".complete"
    }
    listing = [{"md5": files[rel], "relpath": rel} for rel in sorted(files)]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir", files
