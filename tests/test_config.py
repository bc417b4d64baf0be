"""Config validation: wrong keys and types are one-line errors naming the key; overrides apply."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.config_schema import ConfigError
from orchestration.pipeline_config import load_pipeline_config

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def test_quickstart_config_loads_with_defaults():
    cfg = load_pipeline_config(QUICKSTART)
    assert cfg.inputs[0].format == "html"
    assert (cfg.minhash.ngram, cfg.minhash.bands, cfg.minhash.rows) == (5, 14, 8)
    assert cfg.filter.language.model_path is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("minhash.bands=x", "minhash.bands: expected an integer, got 'x'"),
        ("filter.bogus=1", "filter.bogus: unknown key"),
        ("inputs.0.format=xml", "inputs.0.format: must be one of"),
        ("extract.timeout_s=[1]", "extract.timeout_s: expected a number"),
        ("filter.word_splitter=nltk", "filter.word_splitter: must be 'fast' or 'spacy'"),
        ("output.format=csv", "output.format: must be 'parquet' or 'jsonl.zst'"),
        ("inputs.3.name=x", "override inputs.3: '3' is not an index of a list of 1"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(QUICKSTART, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_overrides_apply_typed_values():
    cfg = load_pipeline_config(
        QUICKSTART, ["minhash.bands=20", "ray.num_cpus=1", 'inputs.0.paths=["a/*.html", "b.html"]', "filter.c4=null"]
    )
    assert cfg.minhash.bands == 20 and cfg.ray.num_cpus == 1
    assert cfg.inputs[0].paths == ["a/*.html", "b.html"]
    assert cfg.filter.c4 is None


def test_missing_required_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match="inputs: required key is missing"):
        load_pipeline_config(path)


def test_cli_reports_config_error_in_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "pipeline", str(QUICKSTART), "--workdir", "unused", "--check",
         "minhash.rows=eight"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "tokenmill: config error: minhash.rows: expected an integer, got 'eight'"


def test_cli_help_explains_itself():
    for argv in (["--help"], ["pipeline", "--help"]):
        out = subprocess.run([sys.executable, "-m", "orchestration.cli", *argv], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 0 and "usage: tokenmill" in out.stdout
    assert "RAY_ADDRESS" in out.stdout and "MLFLOW_TRACKING_URI" in out.stdout


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    if path.name.startswith("quality_"):
        from orchestration.config_schema import from_dict
        from orchestration.pipeline_config import load_raw
        from orchestration.quality_train import QualityTrainJob

        job = from_dict(QualityTrainJob, load_raw(path))
        assert job.positives and job.negatives
    else:
        cfg = load_pipeline_config(path)
        assert cfg.inputs and cfg.name


@pytest.mark.parametrize("name", ["../../outside", "a/b", "..", ".hidden", "", "x" * 129])
def test_a_training_job_name_cannot_leave_its_folder(name):
    """The job's name is joined into paths (its checkpoint folder): '../..' would write outside the workdir."""
    from orchestration.train_config import load_train_config

    with pytest.raises(ConfigError, match=r"^name: .* names the job's checkpoint folder"):
        load_train_config(REPO / "configs" / "train" / "quickstart.yaml", [f"name={json.dumps(name)}"])
    assert load_train_config(REPO / "configs" / "train" / "quickstart.yaml", ["name=run-2.a_b"]).name == "run-2.a_b"
