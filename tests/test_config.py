"""Config validation: wrong keys and types are one-line errors naming the key; overrides apply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.typed_config import ConfigError
from orchestration.config.pipeline import load_pipeline_config
from repo_paths import REPO

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
        ("filter.word_splitter=nltk", "filter.word_splitter: must be one of 'fast', 'spacy', got 'nltk'"),
        ("output.format=csv", "output.format: must be one of 'parquet', 'jsonl.zst'"),
        ("inputs.3.name=x", "override inputs.3: '3' is not an index of a list of 1"),
        # ranges: each of these passed before (ray.num_cpus=0 meant all CPUs)
        ("ray.num_cpus=0", "ray.num_cpus: must be >= 1, got 0"),
        ("extract.timeout_s=-1", "extract.timeout_s: must be > 0, got -1.0"),
        ("output.shard_mb=0", "output.shard_mb: must be > 0, got 0.0"),
        ("quality.threshold=1.5", "quality.threshold: must be in [0, 1], got 1.5"),
        ("filter.language.min_score=2", "filter.language.min_score: must be in [0, 1], got 2.0"),
        ("tokenizer.sample_docs=0", "tokenizer.sample_docs: must be >= 1, got 0"),
        ("tokenizer.character_coverage=0", "tokenizer.character_coverage: must be in (0, 1], got 0.0"),
        ("minhash.bands=0", "minhash.bands: must be >= 1, got 0"),
        ("inputs.0.name=a/b", "inputs.0.name: a non-empty name without '/'"),
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
    assert cfg.inputs[0].paths == [str(Path.cwd() / "a/*.html"), str(Path.cwd() / "b.html")]  # typed here: cwd
    assert cfg.filter.c4 is None


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path, monkeypatch):
    """Paths written in a config are relative to that file; overrides typed in a shell to the current folder;
    absolute paths, ~ and URIs are kept. The training job a pipeline names resolves against its own file."""
    from orchestration.chain import load_chain
    from orchestration.config.train import load_train_config

    conf = tmp_path / "conf"
    (conf / "train").mkdir(parents=True)
    (conf / "pipeline.yaml").write_text(
        "name: p\n"
        "inputs:\n"
        "  - {name: a, format: html, paths: ['data/**/*.html', '/abs/x.html', 's3://bucket/crawl/*.warc.gz', '~/y.html']}\n"
        "filter: {language: {model_path: ../models/lid.bin}}\n"
        "tokenizer: {enabled: true}\ntokenize: {enabled: true}\ntrain: train/job.yaml\n")
    (conf / "train" / "job.yaml").write_text("name: j\ndata: {tokenizer: ../tok/t.model}\nmodel: {preset: tiny.yaml}\n")
    (conf / "train" / "tiny.yaml").write_text((REPO / "configs" / "model" / "tiny.yaml").read_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_pipeline_config(conf / "pipeline.yaml", ["quality.model_path=q.bin"])
    assert cfg.inputs[0].paths == [str(conf / "data/**/*.html"), "/abs/x.html", "s3://bucket/crawl/*.warc.gz",
                                   str(Path.home() / "y.html")]
    assert cfg.filter.language.model_path == str(tmp_path / "models" / "lid.bin")  # ".." folded
    assert cfg.quality.model_path == str(elsewhere / "q.bin")
    assert cfg.train == str(conf / "train" / "job.yaml")
    job = load_train_config(conf / "train" / "job.yaml", ["data.manifest=m.json"])
    assert job.data.tokenizer == str(conf / "tok" / "t.model") and job.data.manifest == str(elsewhere / "m.json")
    assert job.model.d_model == 128 and job.model.n_layers == 4  # the preset beside job.yaml, merged on load
    _, chained = load_chain(conf / "pipeline.yaml", ["train.data.tokenizer=../t2.model"])
    assert chained.data.tokenizer == str(tmp_path / "t2.model")


def test_the_quickstart_checks_from_another_folder(tmp_path):
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "run", str(QUICKSTART), "--check"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0 and "99 files" in out.stdout, out.stdout + out.stderr


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


@pytest.mark.parametrize(
    "content, message",
    [
        (b"name: qs\nminhash:\n  bands: 4\nminhash:\n  rows: 2\n",
         ":4:1: not valid YAML: key 'minhash' appears twice (first on line 2)"),
        ("name: café\n".encode("latin-1"), ":1:10: not UTF-8 text (byte 0xe9"),
        ("name: qs\n".encode("utf-16"), ": the file is UTF-16 or UTF-32"),
        (b"name: qs\nminhash:\n\tbands: 4\n", ":3:1: not valid YAML: while scanning for the next token: found "
                                              "character '\\t' that cannot start any token"),
        (b"name: [qs\n", ":2:1: not valid YAML: "),
    ],
)
def test_a_config_file_that_cannot_be_read_names_its_line_and_column(tmp_path, content, message):
    """Every config (pipeline, training, quality, a model preset) is read by config_schema.read_yaml: a key
    written twice, a file that is not UTF-8 and any YAML error are one line with the file, line and column."""
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    proc = _cli("pipeline", str(path), "--workdir", "unused", "--check")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith(f"tokenmill: config error: {path}{message}"), line
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline_config(QUICKSTART, ["minhash.bands=[1"])


def test_cli_help_explains_itself():
    for argv in (["--help"], ["pipeline", "--help"]):
        out = subprocess.run([sys.executable, "-m", "orchestration.cli", *argv], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 0 and "usage: tokenmill" in out.stdout
    assert "RAY_ADDRESS" in out.stdout and "MLFLOW_TRACKING_URI" in out.stdout


SHIPPED = sorted([*(REPO / "configs").glob("*.yaml"), *(REPO / "configs").glob("*/*.yaml"),
                  *(REPO / "configs").glob("*/*/*.yaml")])


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.parent.name not in ("model", "data")],
                         ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_shipped_configs_are_valid(path):
    if path.parent.name == "train" or path.name == "train.yaml":
        from orchestration.config.train import load_train_config

        assert load_train_config(path).name
    elif path.parent.name == "ablate":
        from orchestration.config.ablation import load_ablation

        cfg, variants = load_ablation(path)
        assert cfg.baseline in [v.name for v in variants]
    elif path.parent.name == "eval":
        from orchestration.evaluation.run import load_suite

        suite = load_suite(path)
        assert suite.texts or suite.tasks
    elif path.name.startswith("quality"):
        from pipelines.typed_config import from_dict
        from orchestration.config.schema import load_yaml_config
        from orchestration.corpus.quality_train import QualityTrainJob

        job = from_dict(QualityTrainJob, load_yaml_config(path, schema=QualityTrainJob))
        assert job.positives and job.negatives
    else:
        cfg = load_pipeline_config(path)
        assert cfg.inputs and cfg.name


@pytest.mark.parametrize("name", ["../../outside", "a/b", "..", ".hidden", "", "x" * 129])
def test_a_training_job_name_cannot_leave_its_folder(name):
    """The job's name is joined into paths (its checkpoint folder): '../..' would write outside the workdir."""
    from orchestration.config.train import load_train_config

    with pytest.raises(ConfigError, match=r"^name: .* names the job's checkpoint folder"):
        load_train_config(REPO / "configs" / "train" / "quickstart.yaml", [f"name={json.dumps(name)}"])
    assert load_train_config(REPO / "configs" / "train" / "quickstart.yaml", ["name=run-2.a_b"]).name == "run-2.a_b"


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_modle=128", "model.d_modle: unknown key (allowed: vocab_size, d_model"),  # failed after hashing shards
        ("model.n_layers=2.5", "model.n_layers: expected an integer, got 2.5"),  # passed --check before
        ("model.tie_embeddings='no'", "model.tie_embeddings: expected true/false, got 'no'"),  # passed --check before
        ("model.dropout=1", "model.dropout: must be in [0, 1), got 1.0"),
        ("model.n_heads=3", "model: d_model (128) must be a multiple of n_heads (3)"),
        ("optim.lr=-0.1", "optim.lr: must be > 0, got -0.1"),
        ("optim.betas=[0.9, 1.5]", "optim.betas.1: must be in [0, 1), got 1.5"),
        ("train.precision=fp16", "train.precision: must be one of 'auto', 'fp32', 'bf16', got 'fp16'"),
        ("train.stop_after=0", "train.stop_after: must be >= 1, got 0"),
        ("ray.cpus_per_worker=0", "ray.cpus_per_worker: must be > 0, got 0.0"),
        ("sample.temperature=-1", "sample.temperature: must be >= 0, got -1.0"),
        ("data.val_fraction=1", "data.val_fraction: must be in [0, 1), got 1.0"),
        ("checkpoint.storage_path=../../elsewhere", "checkpoint.storage_path: '../../elsewhere' would leave the workdir"),
        # failed after the whole pipeline had run (`run --check` passed it)
        ("data.seq_len=512", "data.seq_len: 512 exceeds the model's max_seq_len"),
        # mixtures
        ("data.schedule=[{from_step: 5, shares: {a: 1}}]", "data.schedule: a schedule needs data.sources"),
        ("eval.every=0", "eval.every: must be >= 1, got 0"),
    ],
)
def test_training_config_values_are_checked_on_load(override, message):
    from orchestration.config.train import load_train_config

    with pytest.raises(ConfigError) as err:
        load_train_config(REPO / "configs" / "train" / "quickstart.yaml", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=3", "train.epochs: unknown key (allowed: seed, validation_fraction"),  # was a bare TypeError
        ("train.lr=-1", "train.lr: must be > 0, got -1.0"),
        ("train.validation_fraction=1", "train.validation_fraction: must be in [0, 1), got 1.0"),
        ("train.negative_label=hq", "train.negative_label: must differ from positive_label ('hq')"),
        ("train.positive_label='h q'", "train.positive_label: a non-empty label without whitespace, got 'h q'"),
    ],
)
def test_quality_training_values_are_checked_on_load(override, message):
    from orchestration.config.schema import load_yaml_config
    from orchestration.corpus.quality_train import QualityTrainJob
    from pipelines.typed_config import from_dict

    with pytest.raises(ConfigError) as err:
        from_dict(QualityTrainJob, load_yaml_config(REPO / "configs" / "quality_quickstart.yaml", [override],
                                                    QualityTrainJob))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_mixture_source_that_is_not_there_is_named_before_any_work(tmp_path):
    from orchestration.config.train import train_config_from_dict
    from orchestration.train.job import _resolve_data

    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "t.model").write_text("")
    raw = {"name": "m", "model": {"preset": "../model/tiny.yaml"}, "data": {"tokenizer": str(tmp_path / "t.model"),
           "sources": [{"name": "a", "manifest": str(tmp_path / "a.json")},
                       {"name": "b", "manifest": str(tmp_path / "b.json")}]}}
    with pytest.raises(ConfigError, match=rf"data.sources.1.manifest: no such file {tmp_path / 'b.json'}"):
        _resolve_data(train_config_from_dict(raw, REPO / "configs" / "train"))


@pytest.mark.parametrize(
    "data, message",
    [
        ({"sources": [{"name": "a", "manifest": "a.json", "share": 0}, {"name": "b", "manifest": "b.json", "share": 0}]},
         "data.sources.*.share: at least one source needs a share above 0, got [0.0, 0.0]"),
        ({"sources": [{"name": "a", "manifest": "a.json"}, {"name": "a", "manifest": "b.json"}]},
         "data.sources.1.name: 'a' must be unique"),
        ({"sources": [{"name": "a", "manifest": "a.json"}], "schedule": [{"from_step": 9, "shares": {"z": 1}}]},
         "data.schedule.0.shares: no source named 'z' (sources: a)"),
        ({"sources": [{"name": "a", "manifest": "a.json"}], "schedule": [
            {"from_step": 9, "shares": {"a": 1}}, {"from_step": 9, "shares": {"a": 2}}]},
         "data.schedule.1.from_step: 9 must come after 9"),
        ({"sources": [{"name": "a", "manifest": "a.json", "share": -1}]}, "data.sources.0.share: must be >= 0"),
        ({"manifest": "x.json", "sources": [{"name": "a", "manifest": "a.json"}]},
         "data.manifest, data.sources: give one"),
    ],
)
def test_a_mixture_is_checked_on_load(data, message):
    from orchestration.config.train import train_config_from_dict

    raw = {"name": "m", "data": {"tokenizer": "t.model", **data}, "model": {"preset": "../model/tiny.yaml"}}
    with pytest.raises(ConfigError) as err:
        train_config_from_dict(raw, REPO / "configs" / "train")
    assert message in str(err.value), str(err.value)


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (['inputs.0.paths=["/nonexistent/*.html"]'],
         "inputs.0.paths: input pattern '/nonexistent/*.html' matches no file"),
        (['inputs.0.paths=["configs/data"]'], "inputs.0.paths: input '{repo}/configs/data' is a directory"),
        (["quality.enabled=true", "quality.model_path=/nonexistent/quality.bin", "quality.threshold=0.5"],
         "quality.model_path: no such file /nonexistent/quality.bin"),
        (["filter.language.model_path=configs/quickstart.yaml"],
         "filter.language.model_path: {repo}/configs/quickstart.yaml is not a fastText .bin model"),
        (["tokenizer.model_path=configs/quickstart.yaml", "tokenize.enabled=true"],
         "tokenizer.model_path: {repo}/configs/quickstart.yaml is not a SentencePiece model"),
    ],
)
def test_check_resolves_globs_and_opens_models(overrides, message):
    """--check (and the start of a run, before Ray) finds what only failed after every earlier stage before."""
    proc = _cli("pipeline", str(QUICKSTART), "--workdir", "unused", "--check", *overrides)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith("tokenmill: config error: " + message.format(repo=REPO)), line


def test_check_reports_what_it_found():
    proc = _cli("pipeline", str(QUICKSTART), "--workdir", "unused", "--check")
    assert proc.returncode == 0, proc.stderr
    assert "inputs.0 (python-docs): 99 files" in proc.stdout and proc.stdout.rstrip().endswith("valid")


def test_unusable_workdir_is_one_line_with_the_traceback_logged(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = _cli("pipeline", str(QUICKSTART), "--workdir", str(blocker / "work"))
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith(f"tokenmill: error: {blocker / 'work'}: Not a directory"), line
    log = Path(line.rsplit("(traceback in ", 1)[1].rstrip(")"))
    assert "NotADirectoryError" in log.read_text().rsplit("--- ", 1)[1]


def test_a_task_failure_caused_by_input_names_the_pass_and_file():
    from orchestration.cli import _user_error
    from orchestration.corpus.passes import TaskFailed

    gone = FileNotFoundError(2, "No such file or directory", "/data/crawl/part-7.warc.gz")
    line = _user_error(TaskFailed("pass 0 [ingest -> extract -> filter] on crawl/part-7.warc.gz", gone))
    assert line == ("pass 0 [ingest -> extract -> filter] on crawl/part-7.warc.gz: error: /data/crawl/part-7.warc.gz: "
                    "No such file or directory")
    assert _user_error(TaskFailed("pass 1 [minhash] on s/00001", KeyError("bug"))) is None  # a bug: not exit 2


def test_a_missing_model_stops_a_run_before_ray_starts(tmp_path):
    proc = _cli("pipeline", str(QUICKSTART), "--workdir", str(tmp_path / "w"), "quality.enabled=true",
                "quality.model_path=/nonexistent/quality.bin", "quality.threshold=0.5")
    assert proc.returncode == 2 and "quality.model_path: no such file /nonexistent/quality.bin" in proc.stderr
    assert "Ray" not in proc.stdout and not (tmp_path / "w" / "stages").exists()  # before: after every earlier stage


def test_faults_of_the_machine_are_one_line_with_re_run_not_internal_errors():
    """What the CLI says for the machine's faults (the exceptions as the libraries raise them); anything else
    stays an internal error."""
    import errno

    from ray.exceptions import WorkerCrashedError

    from orchestration.cli import _user_error

    s3 = OSError("When listing objects under key 'wd/' in bucket 'b': AWS Error NETWORK_CONNECTION during "
                 "ListObjectsV2 operation: curlCode: 7, Could not connect to server")
    assert "an endpoint could not be reached" in _user_error(s3) and "re-run to resume" in _user_error(s3)
    full = OSError(errno.ENOSPC, "No space left on device", "/w/tokens/x.bin")
    assert _user_error(full) == "error: /w/tokens/x.bin: No space left on device: free some space, then re-run to resume"
    denied = PermissionError(errno.EACCES, "Permission denied", "/w")
    assert _user_error(denied) == "error: /w: Permission denied: fix the permission, then re-run to resume"
    assert "a Ray node or worker process died" in _user_error(WorkerCrashedError())
    assert _user_error(KeyError("model_path")) is None and _user_error(OSError("bad header")) is None


def test_the_command_exits_with_mains_code_after_threads_and_atexit_without_the_teardown():
    # orchestration.cli.run skips the interpreter's module teardown with os._exit, after doing what matters of
    # it: a thread pool left open must not hang it, atexit handlers run, buffered output reaches the pipe
    script = ("import atexit, sys; from concurrent.futures import ThreadPoolExecutor; import orchestration.cli as c\n"
              "pool = ThreadPoolExecutor(1); pool.submit(lambda: 1).result()\n"
              "atexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
              "def main():\n    print('said before the exit', end='')\n    return 3\n"
              "c.main = main\nc.run()\nprint('never printed')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 3
    assert out.stdout == "said before the exit" and "atexit ran" in out.stderr
