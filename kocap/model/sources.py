"""Whether the models a preset loads can be loaded, checked before anything runs.

ensure_sources(root, cfg.model.chosen, offline=True)   # builds models/micro on first use; refuses an
                                                        # uncached hub id offline with one line
"""

from __future__ import annotations

from pathlib import Path


def ensure_sources(root: Path, preset, offline: bool) -> None:
    """Before anything runs: every model the preset loads can be loaded. The micro preset's folders are
    built here when missing (offline, deterministic); a hub id that is neither a folder nor in the
    Hugging Face cache while the hub is offline is refused with one line saying how to pre-fetch it."""
    from .. import paths

    names = [n for n in (preset.vision, preset.llm) if n != "tiny"]
    micro = Path(paths.MICRO)
    if any(Path(n).parent == micro and not (root / n).is_dir() for n in names):
        from .micro import build_micro

        build_micro(root / micro)
    for name in names:
        if (root / name).is_dir() or not offline or _in_hub_cache(name):
            continue
        if "/" not in name or name.startswith((".", "/")) or name.count("/") > 1:
            raise ValueError(f"model folder {name!r} (model.presets) does not exist in {root}")
        raise ValueError(
            f"model {name!r} is neither a local folder nor in the Hugging Face cache, and the hub is offline "
            f"(HF_HUB_OFFLINE=1): pre-fetch it where there is network with `hf download {name}` "
            f"(same HF_HOME), or point model.presets at a local folder holding it"
        )


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # a name that is not a valid repo id is not cached
        return False
