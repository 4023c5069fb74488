import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from kocap import pipeline
from kocap.config import load_config, write_overrides
from kocap.env import RunEnv

from ..conftest import REPO


def test_params_yaml_loads_with_every_section():
    cfg = load_config(REPO / "params.yaml")
    assert set(cfg.model_dump(by_alias=True)) == {
        "data",
        "validate",
        "frames",
        "model",
        "stage1",
        "stage2",
        "prefer",
        "eval",
        "registry",
        "ops",
    }
    assert cfg.data.source == "sample" and cfg.data.aihub.dataset_key == "71849"


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        REPO / "params.yaml",
        [
            "data.sample.num_clips=60",
            "data.aihub.dataset_key=71495",
            "frames.short_clip=reject",
            "data.aihub.keep_archives=true",
        ],
    )
    assert cfg.data.sample.num_clips == 60 and cfg.data.aihub.dataset_key == "71495"
    assert cfg.frames.short_clip == "reject" and cfg.data.aihub.keep_archives is True


@pytest.mark.parametrize("override", ["data.sample.num_clipz=3", "data.source=ftp", "frames.num_frames=0", "oops"])
def test_bad_overrides_are_refused(override):
    with pytest.raises((ValidationError, ValueError)):
        load_config(REPO / "params.yaml", [override])


def test_write_overrides_keeps_comments_and_refuses_bad_values(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    write_overrides(path, ["data.sample.num_clips=30"])
    text = path.read_text(encoding="utf-8")
    assert "num_clips: 30" in text and "# video clips (train + validation)" in text
    assert load_config(path).data.sample.num_clips == 30
    with pytest.raises(ValueError, match="num_clips"):
        write_overrides(path, ["data.sample.num_clips=-1"])
    assert load_config(path).data.sample.num_clips == 30  # nothing written on a refused override


def test_a_rate_written_as_an_exponent_reaches_params_yaml_as_a_number(tmp_path):
    """`kocap run prefer.lr=3e-4`: YAML 1.1 would keep `3e-4` a string, and dvc.lock would record one."""
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    write_overrides(path, ["prefer.lr=3e-4", "stage2.lr=1.5E-3", "registry.model_name=1e5x"])
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert written["prefer"]["lr"] == 3e-4 and written["stage2"]["lr"] == 1.5e-3
    assert written["registry"]["model_name"] == "1e5x"  # not a number: stays the text it was


def test_dvc_yaml_is_generated_from_the_stage_table():
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == pipeline.dvc_yaml()


def _imported_kocap_files(module: str) -> set[str]:
    """The kocap source files importing `module` loads, in a fresh interpreter."""
    code = (
        f"import sys, {module}; print('\\n'.join(m.__file__ for n, m in list(sys.modules.items()) "
        "if n.startswith('kocap') and getattr(m, '__file__', None)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {Path(f).resolve().relative_to(REPO).as_posix() for f in out.split()}


@pytest.mark.parametrize("name", ["ingest", "evaluate", "register"])
def test_a_stages_code_deps_cover_every_kocap_module_it_imports(name):
    """dvc.yaml's code deps are derived from the imports; loading the stage module agrees with them."""
    stage = pipeline.get(name)
    covered = lambda f: any(f == d or f.startswith(d + "/") for d in stage.deps)  # noqa: E731
    missed = {f for f in _imported_kocap_files(stage.module) if not covered(f)} - pipeline.NOT_CODE_DEPS
    assert missed == set(), f"{name} imports {sorted(missed)} but dvc.yaml does not list them"


def test_loading_the_served_model_imports_neither_aihub_nor_the_stage_table():
    """What load_context imports (and everything those import, function-level imports included)."""
    loader = ("kocap.registry.pyfunc_model", "kocap.model.captioner", "kocap.registry.base_ref")
    static = pipeline.code_deps(*loader)
    loaded = set().union(*(_imported_kocap_files(m) for m in loader))
    for files in (static, loaded):
        assert not [f for f in files if f.startswith("kocap/aihub") or f in ("kocap/pipeline.py", "kocap/cli.py")]
    assert "kocap/model/captioner.py" in static and "kocap/registry/base_ref.py" in loaded


def test_every_stage_dep_is_source_or_an_earlier_output_and_params_sections_are_known():
    cfg = load_config(REPO / "params.yaml").model_dump(by_alias=True)
    produced: set[str] = set()
    for s in pipeline.STAGES:
        for d in s.deps:  # works on a clean checkout: data deps come from earlier stages
            assert d in produced or (REPO / d).exists(), (s.name, d)
        assert all(p.split(".")[0] in cfg for p in s.params), s.name
        produced.update(s.outs + s.metrics + s.plots)


def test_runenv_reads_the_key_only_from_its_environment():
    env = RunEnv({"AIHUB_APIKEY": "k-123", "AIHUB_BASE_URL": "http://127.0.0.1:9"})
    assert env.aihub_key().reveal() == "k-123" and env.aihub_base_url() == "http://127.0.0.1:9"
    assert "k-123" not in repr(env.aihub_key())


BAD = [
    "stage2.lr=-1",
    "stage2.epochs=-1",
    "stage2.epochs=0",
    "stage2.batch_size=0",
    "stage2.lora_r=0",
    "stage1.grad_accum=0",
    "eval.temperature=-1",
    "eval.top_p=5",
    "eval.top_p=0",
    "eval.max_new_tokens=-5",
    "model.max_length=0",
    "registry.model_name=",
    "registry.model_name=a/b",
    "data.raw_dir=data/raw",  # gone: dvc.yaml writes data/raw, so a knob that moved it could only mislead
    "stage2.lr=inf",
    "stage2.lr=nan",
    "registry.min_improvement=inf",
    "eval.seed=99999999999999999999999",
    "frames.num_frames=100000",
    "data.sample.size=100000",
    "frames.workers=100000",
    "model.presets.tiny.image_size=1",
    "model.presets.tiny.image_size=72",  # 9 patches of 8 px: the 2x2 pooler needs an even grid
    "data.aihub.dataset_key=../../../x",
    "data.aihub.base_url=file:///etc/passwd",
    "ops.dask_address=not-a-url",
    "validate.max_reject_frac=2",
    "registry.min_unique_share=1.5",
    "eval.top_k=0",
    "model.prompt=",
]


@pytest.mark.parametrize("override", BAD)
def test_every_out_of_range_param_is_refused_before_anything_is_written(tmp_path, override):
    path = tmp_path / "params.yaml"
    before = (REPO / "params.yaml").read_text(encoding="utf-8")
    path.write_text(before, encoding="utf-8")
    key = override.split("=")[0]
    with pytest.raises(ValueError, match=key.replace(".", "\\.")):
        write_overrides(path, [override])
    assert path.read_text(encoding="utf-8") == before


def test_a_yaml_syntax_error_is_a_clear_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: [sample\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"not valid YAML \(params.yaml line 3"):
        load_config(path)


def test_a_failed_write_leaves_params_yaml_whole(tmp_path):
    """A file-size limit below params.yaml's size (`ulimit -f 2`: 2 KiB) makes the write fail midway."""
    path = tmp_path / "params.yaml"
    before = (REPO / "params.yaml").read_text(encoding="utf-8")
    path.write_text(before, encoding="utf-8")
    assert len(before.encode()) > 2048
    code = f"from kocap.config import write_overrides; write_overrides({str(path)!r}, ['stage2.epochs=3'])"
    proc = subprocess.run(
        ["bash", "-c", f'ulimit -f 2; exec {sys.executable} -c "{code}"'],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert proc.returncode != 0 and "File too large" in proc.stderr
    assert path.read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]  # no temporary file left beside it


def test_no_stage_module_imports_another_stage_module():
    """Shared helpers live in the library (paths, data/rows, model/, train/loop): stages never reach sideways."""
    stage_files = {pipeline._relative(pipeline._module_file(s.module)) for s in pipeline.STAGES}
    for s in pipeline.STAGES:
        own = pipeline._module_file(s.module)
        imported = {pipeline._relative(f) for f in pipeline._imports(own)}
        assert imported & stage_files <= {pipeline._relative(own)}, s.name
