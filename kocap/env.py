"""The environment kocap runs in, in one place: the offline defaults every entry point (the CLI, the flows,
the tests) applies, and what a stage may take from outside its params (the AI-Hub key and address).

    setup_environment(Path.cwd())       # offline defaults; PREFECT_HOME, MLflow DB in the project
    env = RunEnv.from_environ()         # handed to each stage; the library never reads os.environ itself
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
}


def setup_environment(root: Path) -> None:
    """Defaults for offline runs; anything the user set wins. PREFECT_HOME stays in the project; while
    `make ui` servers run for this project, runs report to them."""
    from .ui import server_env  # the `make ui` servers' addresses, while they run

    for key, value in {**OFFLINE_ENV, **server_env(root)}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str(root.resolve() / ".prefect"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(root.resolve() / 'mlflow.db').as_posix()}")


@dataclass
class RunEnv:
    """What a stage may take from outside the params: the AI-Hub key and server address.

    Built only by entry points (the CLI, the flows) from their environment; the library never reads
    the environment itself. The key is looked up only when a stage asks for it.
    """

    environ: Mapping[str, str] = field(default_factory=dict)
    secret_block: str = "aihub-apikey"
    track: bool = True  # MLflow tracking of the training stages (off only for the bare-machine GPU check)

    @classmethod
    def from_environ(cls) -> RunEnv:
        return cls(dict(os.environ))

    def aihub_key(self):
        """AIHUB_APIKEY, else the Prefect Secret block, as an ApiKey; MissingKeyError when neither has it."""
        from .aihub.client import ApiKey

        return ApiKey(self.environ.get("AIHUB_APIKEY") or _prefect_secret(self.secret_block) or "")

    def aihub_base_url(self) -> str | None:
        return self.environ.get("AIHUB_BASE_URL") or None

    def hub_offline(self) -> bool:
        """Hugging Face downloads are off (HF_HUB_OFFLINE, set by the offline defaults)."""
        return str(self.environ.get("HF_HUB_OFFLINE", "")).lower() in ("1", "true", "yes", "on")


def _prefect_secret(name: str) -> str | None:
    """The key from a Prefect Secret block, if Prefect has one saved under `name`."""
    try:
        from prefect.blocks.system import Secret

        return Secret.load(name, _sync=True).get()
    except Exception:  # no server, no block: the key is simply absent
        return None
