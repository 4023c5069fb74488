"""The `kocap` command.

kocap run [key.sub=value ...]      the lifecycle flow (Prefect), overrides written to params.yaml
kocap stage NAME                   one stage, as dvc.yaml runs it
kocap aihub list | tree KEY | download KEY --out DIR | emulate ROOT
kocap sample ROOT                  write the embedded AI-Hub-shaped sample
kocap dvc-yaml                     print dvc.yaml as generated from the stage table
kocap micro-preset                 write the micro production-format tower + Qwen3 (real tokenizer)
kocap ui start | stop | status     the Prefect and MLflow servers (`make ui`)
kocap deploy [--only NAME]         lifecycle, watch-aihub (and finetune) deployments
kocap watch                        look for new AI-Hub data once (what watch-aihub runs)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import typer

from . import paths
from .env import RunEnv, setup_environment

# pretty exceptions are off: they print local variables, and a local may hold the AI-Hub key
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="kocap: Korean video captioning lifecycle",
)
aihub_app = typer.Typer(
    no_args_is_help=True, pretty_exceptions_enable=False, help="Talk to AI-Hub (or anything that speaks its protocol)."
)
app.add_typer(aihub_app, name="aihub")
ui_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, help="The Prefect and MLflow UIs.")
app.add_typer(ui_app, name="ui")


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("urllib3", "httpx", "httpcore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def run(
    overrides: list[str] = typer.Argument(None, help="key.sub=value, written to params.yaml first"),
    push: bool = typer.Option(True, help="dvc push the outputs to the default remote at the end"),
    wait: float = typer.Option(0, help="seconds to wait for another run in this workspace (0: stop at once)"),
):
    """Run the lifecycle flow on Prefect: every stage that is not up to date, then push."""
    root = Path.cwd()
    setup_environment(root)
    from .config import load_config

    cfg = load_config(root / "params.yaml", list(overrides or []))  # refused params stop here, before Prefect starts
    if cfg.data.source == "aihub" and os.environ.get("AIHUB_APIKEY"):
        from .aihub.client import ApiKey

        ApiKey(os.environ["AIHUB_APIKEY"])  # a malformed key too: refused before anything could record it
    from .model.sources import ensure_sources

    # a model that cannot be loaded is refused here, before anything runs
    ensure_sources(root, cfg.model.chosen, offline=RunEnv.from_environ().hub_offline())
    from flows.lifecycle import lifecycle

    from .workspace import exclusive

    with exclusive(root, wait):  # before Prefect starts: a refused run leaves no trace
        summary = lifecycle(root=str(root), overrides=list(overrides or []), push=push)
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))


@app.command()
def stage(
    name: str,
    wait: float = typer.Option(0, help="seconds to wait for another run in this workspace (0: stop at once)"),
):
    """Run one stage in the current project (what `dvc repro` calls)."""
    from . import pipeline
    from .config import load_config
    from .workspace import exclusive

    root = Path.cwd()
    setup_environment(root)
    _logging()
    with exclusive(root, wait):  # `dvc repro` beside a `kocap run` would write the same outputs and versions
        result = pipeline.run_stage(name, load_config(root / "params.yaml"), root, RunEnv.from_environ())
    typer.echo(f"{name}: done {result!s:.2000}")


@app.command()
def summary():
    """What the lifecycle produced in this project, and where to look."""
    from . import dvcops, pipeline

    root = Path.cwd()
    setup_environment(root)
    for s in pipeline.STAGES:
        state = "up to date" if not dvcops.changed(root, s.name) else "NOT up to date (run `kocap run` or `dvc repro`)"
        typer.echo(f"stage {s.name}: {state}")
        for out in s.outs + s.metrics:
            typer.echo(f"  {out:<32} {_describe(root / out)}")
    _placement(root)
    _champion_sample(root)
    typer.echo("\nnext: `dvc status` (clean), `dvc repro` (nothing to do), `make demo` again (every stage Cached);")
    typer.echo("      `kocap caption VIDEO`, `kocap lineage`, `mlflow ui --backend-store-uri sqlite:///mlflow.db`;")
    typer.echo("      `make ui` then `make demo`: the flow run in the Prefect UI, runs and models in the MLflow UI;")
    typer.echo("      `kocap deploy`: scheduled retraining when new AI-Hub data lands (README, operations).")


def _placement(root: Path) -> None:
    """The latest version's score beside its reference points (written by the register stage)."""
    from .evaluate.placement import placement_text

    report = root / paths.REGISTER_REPORT
    rows = json.loads(report.read_text(encoding="utf-8")).get("placement") if report.exists() else None
    if rows:
        typer.echo("\nwhere the score stands (reports/eval.html):\n" + placement_text(rows))


def _champion_sample(root: Path) -> None:
    """The champion's caption for one validation clip, next to its reference; while the gate has promoted
    no version yet, the latest challenger's, labelled with why it was not promoted."""
    import pandas as pd

    from .config import load_config

    manifest = root / paths.VALID_CLIPS
    if not manifest.exists():
        return
    clip = pd.read_parquet(manifest).query("split == 'val'").iloc[0]
    name = load_config(root / "params.yaml").registry.model_name
    found = _registered(name)
    if found is None:
        typer.echo("\nno registered model yet: see reports/register.json")
        return
    label, model = found
    result = model.predict([(root / clip["video_path"]).read_bytes()]).iloc[0]
    typer.echo(
        f"\n{label} on {clip['sample_id']}:\n  caption:   {result['caption'] or result['error']}"
        f"\n  reference: {clip['caption_ko']}"
    )


def _registered(name: str):
    """(label, loaded model) of the champion, else of the challenger; None when neither alias exists."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    for alias in ("champion", "challenger"):
        try:
            version = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            continue
        label = f"{alias} v{version.version}"
        if alias == "challenger":
            reasons = version.tags.get("kocap.reasons", "see reports/register.json")
            label += f" (no champion yet; the gate said: {reasons})"
        return label, mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    return None


def _describe(path: Path) -> str:
    if path.suffix == ".parquet" and path.exists():
        import pandas as pd

        df = pd.read_parquet(path)
        by_split = df["split"].value_counts().to_dict() if "split" in df else {}
        return f"{len(df)} rows" + (f" {by_split}" if by_split else "")
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        return f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB"
    return f"{path.stat().st_size} bytes" if path.exists() else "missing"


@app.command("dvc-yaml")
def dvc_yaml():
    """Print dvc.yaml as generated from the stage table."""
    from .pipeline import dvc_yaml as render

    sys.stdout.write(render())


@app.command("micro-preset")
def micro_preset(out: Path = typer.Option(Path(paths.MICRO), help="where model.presets.micro points")):
    """Write the micro CLIP tower and Qwen3 LLM (Qwen's real tokenizer) as Hugging Face folders, offline."""
    from .model.micro import build_micro

    for part, folder in build_micro(out).items():
        typer.echo(f"{part}: {folder}")


@app.command()
def sample(out: Path, num_clips: int | None = None):
    """Write the embedded AI-Hub-shaped sample under OUT (serve it with `kocap aihub emulate OUT`)."""
    from .config import SampleParams
    from .sample.build import build_aihub_sample

    params = SampleParams(**({"num_clips": num_clips} if num_clips else {}))
    typer.echo(build_aihub_sample(out, params))


def _model_uri(uri: str | None) -> str:
    from .config import load_config

    return uri or f"models:/{load_config(Path.cwd() / 'params.yaml').registry.model_name}@champion"


@app.command()
def caption(videos: list[Path], model: str | None = typer.Option(None, help="default: models:/kocap@champion")):
    """Print one Korean caption per video (errors per item, the batch goes on)."""
    setup_environment(Path.cwd())
    import mlflow

    loaded = mlflow.pyfunc.load_model(_model_uri(model))
    readable, lines = [], {}
    for i, video in enumerate(videos):  # the files you name are read here and sent as bytes, as to a server
        try:
            readable.append((i, video.read_bytes()))
        except OSError as exc:
            lines[i] = f"ERROR: cannot read it ({exc.strerror or type(exc).__name__})"
    if readable:
        result = loaded.predict([data for _, data in readable])
        for (i, _), (_, row) in zip(readable, result.iterrows()):
            lines[i] = "ERROR: " + row["error"] if row["error"] else row["caption"]
    for i, video in enumerate(videos):
        typer.echo(f"{video}\t{lines[i]}")


@app.command()
def compare():
    """Every registered version on this project's current validation clips, side by side."""
    root = Path.cwd()
    setup_environment(root)
    from .config import load_config
    from .registry.compare import compare_versions, table

    typer.echo(table(compare_versions(load_config(root / "params.yaml"), root)))


@app.command()
def export(
    out: Path,
    model: str | None = typer.Option(None, help="default: models:/kocap@champion"),
):
    """Write a registered version as a folder plain transformers loads (merged weights, tokenizer with the
    chat template, frame preprocessor, decoding); its README.md shows the code."""
    setup_environment(Path.cwd())
    from .registry.export import export_version

    uri = _model_uri(model)
    recipe = export_version(uri, out)
    typer.echo(f"{recipe['origin']} -> {out}: {recipe['video_tokens']} video tokens per clip; see its README.md")


@app.command()
def lineage(uri: str | None = typer.Argument(None, help="models:/NAME@ALIAS or models:/NAME/VERSION")):
    """The data hashes, params and commit behind a model, and how to restore its data."""
    setup_environment(Path.cwd())
    from mlflow import MlflowClient

    from .registry.lineage import restore_commands

    client, uri = MlflowClient(), _model_uri(uri)
    name, _, ref = uri.removeprefix("models:/").partition("@")
    version = client.get_model_version_by_alias(name, ref) if ref else client.get_model_version(*name.split("/"))
    tags = dict(version.tags)
    from .registry.register import usable

    if not usable(version):
        raise ValueError(
            f"{version.name} version {version.version} is incomplete (its registration was "
            f"interrupted): `kocap run` or `kocap stage register` completes it"
        )
    typer.echo(f"{version.name} version {version.version} (run {tags.get('run_id')})")
    for key in sorted(tags):
        typer.echo(f"  {key} = {tags[key]}")
    params = client.get_run(tags["run_id"]).data.params
    typer.echo("params:")
    for key in sorted(params):
        typer.echo(f"  {key} = {params[key]}")
    typer.echo("restore its data:\n  " + "\n  ".join(restore_commands(tags)))


@app.command()
def promote(version: str, force: bool = typer.Option(False, "--force"), reason: str = typer.Option("", "--reason")):
    """Make VERSION the champion by hand (needs --force and --reason; logged on the version)."""
    setup_environment(Path.cwd())
    from .config import load_config
    from .registry.register import force_promote

    if not force:
        raise ValueError("promotion outside the gate needs --force (and --reason)")
    force_promote(load_config(Path.cwd() / "params.yaml").registry.model_name, version, reason)
    typer.echo(f"version {version} is now champion (manual override: {reason})")


@ui_app.command("start")
def ui_start(prefect_port: int = 4200, mlflow_port: int = 5000):
    """Start the Prefect server and the MLflow server in the background (pids in .kocap-ui/)."""
    from . import ui

    setup_environment(Path.cwd())  # the servers run with the same offline defaults and PREFECT_HOME
    state = ui.start(Path.cwd(), prefect_port, mlflow_port)
    typer.echo(
        f"Prefect UI  {state['prefect']['url']}  (pid {state['prefect']['pid']})\n"
        f"MLflow UI   {state['mlflow']['url']}  (pid {state['mlflow']['pid']})\n"
        "kocap commands in this folder now report to them; `make ui-stop` stops both."
    )


@ui_app.command("stop")
def ui_stop():
    """Stop the servers `kocap ui start` started."""
    from . import ui

    typer.echo(f"stopped: {', '.join(ui.stop(Path.cwd())) or 'nothing was running'}")


@ui_app.command("status")
def ui_status():
    from . import ui

    state = ui.servers(Path.cwd())
    typer.echo("\n".join(f"{k}: {v['url']} (pid {v['pid']})" for k, v in state.items()) or "not running")


@app.command()
def deploy(
    only: list[str] | None = typer.Option(None, help="lifecycle | watch-aihub | finetune (repeatable)"),
    pool: str | None = typer.Option(None, help="work pool (default from params.yaml ops)"),
):
    """Create the work pools and deployments on the Prefect server (start it with `make ui`)."""
    root = Path.cwd()
    setup_environment(root)
    if not os.environ.get("PREFECT_API_URL"):
        raise ValueError("deployments need a Prefect server: run `make ui` (or set PREFECT_API_URL)")
    from flows.deploy import deploy as run_deploy

    for name, dep_id in run_deploy(root, list(only or []), pool).items():
        typer.echo(f"deployed {name} ({dep_id})")
    typer.echo("start a worker: prefect worker start --pool POOL (see README, operations)")


@app.command()
def watch():
    """Look for new AI-Hub data once: ingest it and emit kocap.aihub.data-landed."""
    root = Path.cwd()
    setup_environment(root)
    from flows.watch import watch_aihub

    typer.echo(json.dumps(watch_aihub(root=str(root)), ensure_ascii=False))


def _client():
    from .aihub.client import DEFAULT_BASE_URL, AIHubClient

    setup_environment(Path.cwd())  # offline defaults and the project's PREFECT_HOME (the key may be a Secret block)
    env = RunEnv.from_environ()
    return AIHubClient(env.aihub_base_url() or DEFAULT_BASE_URL), env


@aihub_app.command("list")
def aihub_list():
    """List AI-Hub datasets (key, title)."""
    client, _ = _client()
    for key, title in client.list_datasets().items():
        typer.echo(f"{key}\t{title}")


@aihub_app.command("tree")
def aihub_tree(key: str):
    """Show a dataset's files: filekey, display size, path."""
    client, _ = _client()
    for f in client.tree(key):
        typer.echo(f"{f.filekey}\t{f.display_size:>8}\t{f.path}")


@aihub_app.command("download")
def aihub_download(
    key: str,
    out: Path = typer.Option(..., "--out"),
    filekeys: str | None = typer.Option(None, help="comma list; default all"),
    retries: int = 2,
    keep_archives: bool = False,
):
    """Download filekeys (merged, verified and extracted) into OUT."""
    from .aihub.download import fetch, unpack
    from .aihub.errors import IncompleteDownloadError, TransferError, UnsafeArchiveError

    _logging()
    client, env = _client()
    client.api_key = env.aihub_key()
    files = client.tree(key)
    if filekeys:
        wanted = {k.strip() for k in filekeys.split(",")}
        files = [f for f in files if f.filekey in wanted]
    result = fetch(client, key, files, out, retries)
    refused = dict(result.failed)
    for filekey, path in result.landed.items():  # every good archive is extracted, whatever others did
        try:
            unpacked = unpack(path, path.with_suffix(""), out / "conflicts" / filekey, keep_archives)
        except (UnsafeArchiveError, TransferError) as exc:
            refused[filekey] = str(exc)
            continue
        typer.echo(f"landed {filekey}: {path.with_suffix('') if unpacked else path}")
    if refused:
        raise IncompleteDownloadError(refused)


@aihub_app.command("emulate")
def aihub_emulate(
    root: Path,
    port: int = 8765,
    part_size: int = 1 << 30,
    key: str = typer.Option("kocap-sample-key", help="the API key the emulator accepts"),
):
    """Serve a folder of AI-Hub-shaped data on 127.0.0.1 with the real protocol."""
    import time

    from .aihub.emulator import Emulator

    with Emulator(root, {key}, part_size=part_size, port=port) as emu:
        typer.echo(f"AI-Hub emulator at {emu.url} (AIHUB_BASE_URL={emu.url}); Ctrl-C stops it")
        while True:
            time.sleep(3600)


def _stop_on_sigterm() -> None:
    """`kill PID` (SIGTERM) ends kocap like Ctrl-C: finally blocks and atexit run, so the temporary
    Prefect server a run started is stopped with it and the workspace lock is released (Python's default
    SIGTERM ends the process on the spot, leaving the server to a later run's reaping)."""
    import signal

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main():
    _stop_on_sigterm()
    try:
        app()
    except Exception as exc:  # a clear one-line error for the user; the key never appears in messages
        message = user_error(exc)
        if message is None:
            raise
        typer.secho(f"kocap: {message}", err=True, fg="red")
        sys.exit(2)


def user_error(exc: Exception) -> str | None:
    """The message for an error the user can act on (bad params, unknown model, unreachable service),
    or None for a bug (which keeps its traceback)."""
    from .aihub.errors import AIHubError
    from .registry.base_ref import BaseNotFound
    from .workspace import WorkspaceBusy

    if isinstance(exc, (AIHubError, ValueError, KeyError, WorkspaceBusy, BaseNotFound)):
        return str(exc)
    # imported lazily (they pull in MLflow, Kiwi, torch): matched by name
    if type(exc).__name__ in ("RegistryError", "MetricUnavailable", "NonFiniteLogits", "NonFiniteLoss"):
        return str(exc)
    try:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            return f"MLflow: {exc.message}"
    except ImportError:
        pass
    import requests

    if isinstance(exc, requests.exceptions.RequestException):
        url = getattr(getattr(exc, "request", None), "url", None) or "the server"
        return (
            f"could not reach {url.split('?')[0]} ({type(exc).__name__}): check the address "
            f"(AIHUB_BASE_URL, MLFLOW_TRACKING_URI), your network and whether the server is up"
        )
    return None


if __name__ == "__main__":
    main()
