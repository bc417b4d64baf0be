"""The full pipeline (every stage) on the dolma fixtures, run as a user runs it: the CLI in a subprocess
(or tests/multinode_run.py on a simulated cluster). Shared by the determinism and multi-node tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "quickstart.yaml"


def overrides(corpora: Path, langid_model: Path, quality_model: Path, extra: list[str]) -> list[str]:
    inputs = (
        f'inputs=[{{name: crawl, format: jsonl, paths: ["{corpora}/dolma_fixtures/*.jsonl.gz"]}},'
        f' {{name: warc, format: warc, paths: ["{corpora}/dolma_fixtures/*.warc.gz"]}}]'
    )
    return [inputs, f"filter.language.model_path={langid_model}",
            "filter.language.min_score=0.3", "quality.enabled=true", f"quality.model_path={quality_model}",
            "quality.threshold=null", "quality.keep_fraction=0.7", "tokenizer.enabled=true", "tokenizer.vocab_size=3000",
            "tokenize.enabled=true", "tokenize.target_shard_tokens=30000", "output.shard_mb=0.05", *extra]


def cli(workdir: Path, over: list[str]) -> list[str]:
    return [sys.executable, "-m", "orchestration.cli", "pipeline", str(CONFIG), "--workdir", str(workdir), *over]


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
