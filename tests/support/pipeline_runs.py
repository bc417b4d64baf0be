"""The full pipeline (every stage, and two stages of the user's own) on the dolma fixtures, run as a user runs it:
the CLI in a subprocess (or tests/support/multinode_run.py on a simulated cluster). Shared by the determinism and
multi-node tests.

The user's stages are those a user keeps beside their config, outside the repository (`outside_config`): a
datatrove URLFilter by class path with a blocklist file, after ingest, and a Stage subclass of their own module,
after the filters. Nothing but the runtime env's py_modules brings that module to the Ray workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from repo_paths import REPO

CONFIG = REPO / "configs" / "quickstart.yaml"
USER_MODULE = "tm_user_stages"
USER_STAGE_NAMES = ["url_blocklist", "short_docs"]


def outside_config(folder: Path) -> Path:
    """The quickstart config, a blocklist and a module of stages in `folder` (outside the repository), as a user
    keeps them: the config names the module and the blocklist relative to itself."""
    (folder / f"{USER_MODULE}.py").write_text((REPO / "configs" / "mystages.py").read_text())  # the README's
    (folder / "blocklist.txt").write_text("# two sites of the dolma WARC sample\ncommoncrawl.org\nkyleclo.com\n")
    text = CONFIG.read_text().replace('"data/', f'"{REPO}/configs/data/')
    text = text.replace("train: quality_quickstart.yaml", f"train: {REPO}/configs/quality_quickstart.yaml")
    text = text.replace("train: train/quickstart.yaml", f"train: {REPO}/configs/train/quickstart.yaml")
    text += f"""user_stages:
  - name: url_blocklist
    after: ingest
    datatrove: datatrove.pipeline.filters.URLFilter
    options: {{use_integrated_lists: false}}
    options_from_files: {{extra_domains: blocklist.txt}}
  - name: short_docs
    after: filter
    stage: {USER_MODULE}:ShortDocs
    options: {{min_words: 60}}
"""
    path = folder / "pipeline.yaml"
    path.write_text(text)
    return path


def overrides(corpora: Path, langid_model: Path, quality_model: Path, extra: list[str]) -> list[str]:
    inputs = (
        f'inputs=[{{name: crawl, format: jsonl, url_field: metadata.warc_url, '
        f'paths: ["{corpora}/dolma_fixtures/*.jsonl.gz"]}},'
        f' {{name: warc, format: warc, paths: ["{corpora}/dolma_fixtures/*.warc.gz"]}}]'
    )
    return [inputs, f"filter.language.model_path={langid_model}",
            "filter.language.min_score=0.3", "quality.enabled=true", f"quality.model_path={quality_model}",
            "quality.threshold=null", "quality.keep_fraction=0.7", "tokenizer.enabled=true", "tokenizer.vocab_size=3000",
            "tokenize.enabled=true", "tokenize.target_shard_tokens=30000", "output.shard_mb=0.05", *extra]


def cli(workdir: Path, over: list[str], config: Path = CONFIG) -> list[str]:
    return [sys.executable, "-m", "orchestration.cli", "pipeline", str(config), "--workdir", str(workdir), *over]


def env(workdir: Path) -> dict:
    out = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}.mlflow.db"}
    out.pop("RAY_ADDRESS", None)
    return out


def run(cmd: list[str], workdir: Path) -> tuple[dict, str]:
    proc = subprocess.run(cmd, cwd=REPO, env=env(workdir), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((workdir / "summary.json").read_text()), proc.stdout


def same_outputs(a: dict, b: dict) -> None:
    assert a["raw_files_digest"] == b["raw_files_digest"]
    assert [s["stage"] for s in a["stages"]] == [s["stage"] for s in b["stages"]]
    for x, y in zip(a["stages"], b["stages"]):
        assert x["output_digest"] == y["output_digest"], x["stage"]
        assert (x["kept"], x["dropped"], x["quarantined"]) == (y["kept"], y["dropped"], y["quarantined"])
    assert a["tokenizer"]["sha256"] == b["tokenizer"]["sha256"]
    assert a["tokens"]["digest"] == b["tokens"]["digest"]
