"""The `tokenmill` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestration.config_schema import ConfigError

EPILOG = """Environment:
  RAY_ADDRESS          run on this Ray cluster instead of a local Ray started for the run
  MLFLOW_TRACKING_URI  MLflow store (default: MLflow's own, sqlite:///mlflow.db in the current directory)
"""


def _pipeline(args: argparse.Namespace) -> int:
    from orchestration.pipeline_config import load_pipeline_config

    cfg = load_pipeline_config(args.config, args.overrides)
    if args.check:
        print(f"{args.config}: valid")
        return 0
    from orchestration.pipeline import run_pipeline

    run_pipeline(cfg, Path(args.workdir))
    return 0


def _quality_train(args: argparse.Namespace) -> int:
    from orchestration.quality_train import run_quality_train

    run_quality_train(args.config, args.overrides)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenmill",
        description="Turn raw text into pretraining data on Ray Data, every stage recorded in MLflow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "pipeline",
        help="run the corpus pipeline (ingest, extract, filter, exact dedup, MinHash) from a YAML config",
        description="Run the configured corpus stages on Ray Data. Each stage writes its kept and dropped "
        "documents as shards with a manifest under WORKDIR/stages/, and is one MLflow child run of the "
        "pipeline's run. Prints a per-stage summary and writes it to WORKDIR/summary.json.",
        epilog=EPILOG + "\nExample:\n  tokenmill pipeline configs/quickstart.yaml --workdir work/qs "
        "'inputs.0.paths=[\"data/*.jsonl.zst\"]' minhash.bands=20\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="pipeline YAML (see configs/quickstart.yaml)")
    p.add_argument("--workdir", required=True, help="output folder (stage shards, manifests, summary.json)")
    p.add_argument("--check", action="store_true", help="only validate the config (with overrides) and exit")
    p.add_argument("overrides", nargs="*", metavar="dotted.key=value",
                   help="override any config key; the value is read as YAML (e.g. ray.num_cpus=2)")
    p.set_defaults(func=_pipeline)

    q = sub.add_parser("quality", help="quality classifier commands (train)")
    qsub = q.add_subparsers(dest="quality_command", required=True, metavar="SUBCOMMAND")
    qt = qsub.add_parser(
        "train",
        help="train a fastText quality classifier from positive and negative sources (DCLM-style)",
        description="Train a fastText quality classifier from the positive (reference) and negative sources "
        "of a YAML job, balanced and deterministic given the seed; logs precision, recall, F1 and ROC AUC on "
        "a validation split and the model (with its sha256) to an MLflow run. Use the model in a pipeline "
        "with quality.model_path.",
        epilog=EPILOG + "\nExample:\n  tokenmill quality train configs/quality_dev.yaml train.seed=1\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    qt.add_argument("config", help="quality training YAML (see configs/quality_dev.yaml)")
    qt.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="override any config key")
    qt.set_defaults(func=_quality_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # overrides may come before or after options: collect the leftover key=value words ourselves
    args, rest = parser.parse_known_args(argv)
    bad = [w for w in rest if w.startswith("-") or "=" not in w]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if rest:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.overrides = [*args.overrides, *rest]
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"tokenmill: config error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # an input glob matched nothing, a model path is wrong, ...
        print(f"tokenmill: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
