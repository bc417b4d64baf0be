"""The `tokenmill` command line."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from pipelines.typed_config import ConfigError
from pipelines import storage
from pipelines.shard_export import FORMATS as EXPORT_FORMATS
from pipelines.errors import UsageError
from pipelines.manifest import ShardIntegrityError

VERBOSE_HELP = ("show Ray's and the libraries' output live (the workers' lines, Ray Train's reports, MLflow's "
                "log); by default it goes to WORKDIR/logs/ and the terminal shows progress and the summary")
EPILOG = """Paths:
  relative paths in a config file (inputs, models, the training job, manifests) are relative to that
  file's folder; in dotted.key=value overrides, to the current folder; absolute paths and URIs as given
Environment:
  RAY_ADDRESS          run on this Ray cluster instead of a local Ray started for the run
  MLFLOW_TRACKING_URI  MLflow store (default: MLflow's own, sqlite:///mlflow.db in the current directory)
"""


def _checked(config: str, lines: list[str]) -> int:
    for line in lines:
        print(f"  {line}")
    print(f"{config}: valid")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from orchestration.config.pipeline import load_pipeline_config
    from orchestration.config.preflight import check_pipeline

    cfg = load_pipeline_config(args.config, args.overrides)
    if args.check:
        return _checked(args.config, check_pipeline(cfg))
    from orchestration.corpus.pipeline import run_pipeline

    _quiet(args.workdir, args.verbose)
    run_pipeline(cfg, storage.path(args.workdir))
    return 0


def _quality_train(args: argparse.Namespace) -> int:
    from orchestration.corpus.quality_train import run_quality_train

    run_quality_train(args.config, args.overrides)
    return 0


def _train(args: argparse.Namespace) -> int:
    from orchestration.config.train import load_train_config

    from orchestration.config.preflight import check_train

    cfg = load_train_config(args.config, args.overrides)
    if args.check:
        return _checked(args.config, check_train(cfg))
    if args.plan:
        return _plan(cfg, args)
    given = [f"--{k.replace('_', '-')}" for k in ("device_memory", "gpu", "mfu") if getattr(args, k) is not None]
    if given:
        raise UsageError(f"tokenmill train: {', '.join(given)} only go with --plan (a job's device memory is "
                         "train.device_memory, its expected MFU train.expected_mfu)")
    if not args.workdir:
        raise UsageError("tokenmill train: --workdir is required (except with --plan or --check)")
    from orchestration.train.job import run_train

    _quiet(args.workdir, args.verbose)
    run_train(cfg, storage.path(args.workdir))
    return 0


def _plan(cfg, args: argparse.Namespace) -> int:
    """`tokenmill train CONFIG --plan`: the job's plan, without data, Ray or a device; exit 1 if it cannot fit."""
    from model.plan import parse_bytes
    from orchestration.train.planning import job_plan, vocab_size

    try:
        memory = parse_bytes(args.device_memory) if args.device_memory else None
    except ValueError as exc:
        raise UsageError(f"--device-memory: {exc}") from None
    if args.mfu is not None and not 0 < args.mfu <= 1:
        raise UsageError(f"--mfu: {args.mfu} is not a fraction in (0, 1] (0.4 = 40%)")
    p = job_plan(cfg, cfg.model_config(vocab_size(cfg)), gpu=args.gpu, device_memory=memory, mfu=args.mfu)
    print("\n".join(p.lines()))
    return 0 if p.fits else 1


def _run(args: argparse.Namespace) -> int:
    from orchestration.chain import load_chain, run_chain

    from orchestration.config.preflight import check_pipeline

    pipeline_cfg, train_cfg = load_chain(args.config, args.overrides)
    if args.check:  # the training data is what the pipeline will make: its model keys were checked on load
        return _checked(args.config, check_pipeline(pipeline_cfg))
    workdir = args.workdir or f"work/{pipeline_cfg.name}"
    _quiet(workdir, args.verbose)
    run_chain(pipeline_cfg, train_cfg, storage.path(workdir))
    return 0


def _quiet(workdir: str, verbose: bool) -> None:
    """Library logs, warnings and the Ray workers' output to the workdir's log folder, unless --verbose."""
    from orchestration.runtime import console

    console.configure(workdir, verbose)


def _generate(args: argparse.Namespace) -> int:
    from model.layers import KVCache
    from orchestration.train.generate import load_for_sampling
    from model.generate import check_sampling
    from model.generate import prompt_ids
    from model.generate import complete
    check_sampling(args.max_new_tokens, args.temperature, args.top_k)
    model, tok = load_for_sampling(args.checkpoint, args.tokenizer)
    for prompt in args.prompt:  # every prompt checked before the first is generated
        _, note = prompt_ids(model, tok, prompt, args.max_new_tokens)
        if note:
            print(f"tokenmill: {note}", file=sys.stderr)
    cfg = model.cfg
    print(f"tokenmill: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; KV cache "
          f"{KVCache.bytes_per_token(cfg)} bytes per token ({cfg.n_kv_heads} key/value heads for {cfg.n_heads} query "
          f"heads, {cfg.n_layers} layers, fp32)", file=sys.stderr)
    for prompt in args.prompt:
        print(prompt + complete(model, tok, prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed))
        print(SAMPLE_SEPARATOR)
    return 0


SAMPLE_SEPARATOR = "-" * 40  # between samples, which span lines

DEFAULT_SUITE = Path(__file__).resolve().parents[1] / "configs" / "eval" / "core.yaml"


def _eval(args: argparse.Namespace) -> int:
    from orchestration.evaluation.run import load_suite, run_eval

    if args.check:
        suite = load_suite(args.suite, args.overrides)
        print(f"tokenmill: suite {suite.name!r} is valid: {len(suite.texts)} text set(s), {len(suite.tasks)} task(s)")
        return 0
    run_eval(args.model, args.suite, args.overrides, experiment=args.experiment)
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from orchestration.ablation.run import print_report, run_ablation
    from orchestration.config.ablation import load_ablation

    if args.report:
        print_report(args.report)
        return 0
    if not args.config:
        raise ConfigError("ablate: give CONFIG (or --report RUN)")
    cfg, variants = load_ablation(args.config, args.overrides)  # every variant's configs built: errors now
    if args.check:
        print(f"tokenmill: ablation {cfg.name!r} is valid: {len(variants)} variants "
              f"({', '.join(v.name for v in variants)}), {cfg.seeds} seeds")
        return 0
    run_ablation(cfg, variants, args.workdir or f"work/ablate/{cfg.name}")
    return 0


def _lineage(args: argparse.Namespace) -> int:
    import json

    from orchestration.lineage import walk as lineage
    from orchestration.runtime import tracking

    tracking.setup_uri()
    if args.doc:
        fate = lineage.doc_fate(args.doc)
        print(json.dumps(fate, indent=1) if args.json else lineage.format_fate(fate))
        return 0 if fate["pipelines"] else 1
    if args.spikes:
        report = lineage.loss_spikes(args.spikes)
        print(json.dumps(report, indent=1) if args.json else lineage.format_spikes(report))
        return 0
    if args.step is not None:
        if not args.run:
            raise ConfigError("--step: give the training run with --run RUN_ID")
        batch = lineage.step_batch(args.run, args.step)
        print(json.dumps(batch, indent=1) if args.json else lineage.format_batch(batch))
        return 0
    if not args.start:
        raise ConfigError("lineage: give START (a run id, checkpoint folder or manifest), --doc or --run/--step")
    tree = lineage.build(args.start)
    if args.verify:
        found = [(False, p) for p in tree.get("problems", [])] + lineage.verify(tree)
        for ok, line in found:
            print(f"  {'ok' if ok else 'CHANGED'}: {line}")
        bad = sum(not ok for ok, _ in found)
        print(f"tokenmill lineage --verify: {'everything verifies' if not bad else f'{bad} problem(s)'}")
        return 1 if bad else 0
    if args.format == "openlineage":
        from orchestration.lineage import openlineage as lineage_events

        print(lineage_events.to_json_lines(lineage_events.events(tree)))
    elif args.json or args.format == "json":
        print(json.dumps(tree, indent=1))
    else:
        print(lineage.format_tree(tree))
    return 0


def _export_shards(args: argparse.Namespace) -> int:
    from pipelines.shard_export import export_shards

    out = export_shards(args.manifest, args.out, args.format, include_eos=not args.no_eos,
                        tokenizer_name=args.tokenizer_name, force=args.force)
    print(f"tokenmill: exported {out['documents']:,} documents, {out['tokens']:,} tokens to {args.out} "
          f"({args.format}, {len(out['files'])} files; {out['path']} lists them with their sha256)")
    return 0


def _ui(args: argparse.Namespace) -> int:
    import os
    import shutil

    from orchestration.runtime import tracking

    uri = tracking.setup_uri()
    mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow_cli is None:
        raise FileNotFoundError(2, "the mlflow command is not installed beside this Python", "mlflow")
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    print(f"tokenmill: MLflow UI for {tracking.shown_uri(uri)} on {base}", file=sys.stderr, flush=True)
    # each tokenmill experiment's runs page: MLflow 3's home page and an experiment's default tab are its
    # GenAI views (traces, latency), empty here
    for name, exp_id in tracking.tokenmill_experiments():
        print(f"tokenmill:   {name}: {base}/#/experiments/{exp_id}/runs", file=sys.stderr, flush=True)
    # exec: the UI is this process, so stopping it (Ctrl-C, SIGTERM) stops the server
    os.execv(mlflow_cli, [mlflow_cli, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)])
    return 0  # not reached


def _doctor(args: argparse.Namespace) -> int:
    from orchestration.doctor import run

    return run(args.workdir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenmill",
        description="Turn raw text into pretraining data on Ray Data and pretrain a decoder on it with Ray Train, "
        "every stage recorded in MLflow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "pipeline",
        help="run the corpus pipeline (ingest, extract, filter, dedup, quality, tokenize, your own stages) from a YAML",
        description="Run the configured corpus stages on Ray, one task per shard, consecutive one-to-one stages "
        "fused into one pass. Each stage writes its dropped documents and a manifest under WORKDIR/stages/ "
        "(surviving documents under WORKDIR/docs/) and is one MLflow child run of the pipeline's run. Re-running "
        "the same command on the same workdir resumes: finished shard tasks are skipped. Prints a per-stage "
        "summary and writes it to WORKDIR/summary.json.",
        epilog=EPILOG + "\nExample:\n  tokenmill pipeline configs/quickstart.yaml --workdir work/qs "
        "'inputs.0.paths=[\"data/*.jsonl.zst\"]' minhash.bands=20\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="pipeline YAML (see configs/quickstart.yaml)")
    p.add_argument("--workdir", required=True, help="output folder (stage shards, manifests, summary.json)")
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
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

    t = sub.add_parser(
        "train",
        help="pretrain a decoder on token shards with Ray Train (FSDP2 workers), recorded in MLflow",
        description="Pretrain the configured decoder on verified token shards: Ray Train TorchTrainer, FSDP2 "
        "over N workers (gloo on CPU, NCCL + bf16 on GPU), sharded checkpoints every K steps. Re-running a job "
        "with the same name and workdir resumes from its last checkpoint. Ends with a safetensors export in "
        "WORKDIR/model and text samples.",
        epilog=EPILOG + "\nExample:\n  tokenmill train configs/train/quickstart.yaml --workdir work/quickstart/train "
        "data.manifest=work/quickstart/tokens/manifest.json data.tokenizer=work/quickstart/tokenizer/tokenizer.model\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("config", help="training job YAML (see configs/train/)")
    t.add_argument("--workdir", help="output folder (Ray Train storage, export, train_summary.json)")
    t.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    t.add_argument("--check", action="store_true", help="only validate the config (with overrides) and exit")
    t.add_argument("--plan", action="store_true",
                   help="print the job's plan (parameters, FLOPs, memory per device by kind, the largest micro-batch "
                        "that fits, tokens, expected time) and exit: 1 if it does not fit")
    t.add_argument("--device-memory", metavar="SIZE", help="with --plan: one device's memory, e.g. 80GB")
    t.add_argument("--gpu", metavar="NAME", help="with --plan: plan for this GPU (H100, H200, A100, L40S, A10G, L4): "
                   "its memory and bf16 peak")
    t.add_argument("--mfu", type=float, help="with --plan: the MFU the expected time assumes (default train.expected_mfu)")
    t.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="override any config key")
    t.set_defaults(func=_train)

    r = sub.add_parser(
        "run",
        help="the whole chain: the pipeline of a config, then training on its token shards",
        description="Run the pipeline of CONFIG (which must tokenize), then the training job its `train` key "
        "names, on the shards and tokenizer the pipeline produced; prints text samples at the end. Overrides "
        "prefixed with `train.` go to the training job (e.g. train.train.steps=50).",
        epilog=EPILOG + "\nExample:\n  tokenmill run configs/quickstart.yaml\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("config", help="pipeline YAML with a `train:` job (see configs/quickstart.yaml)")
    r.add_argument("--workdir", help="output folder (default work/<name>)")
    r.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    r.add_argument("--check", action="store_true", help="only validate both configs (with overrides) and exit")
    r.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="override any config key")
    r.set_defaults(func=_run)

    g = sub.add_parser(
        "generate",
        help="sample text from a trained model (an export folder or a Ray Train checkpoint)",
        description="Generate text from CHECKPOINT: a safetensors export (WORKDIR/model) or a sharded Ray Train "
        "checkpoint folder (WORKDIR/ray/<job>/checkpoint_step...), with a KV cache.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("checkpoint", help="export folder or Ray Train checkpoint folder")
    g.add_argument("--prompt", action="append", required=True, help="prompt text (repeat for several)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    g.add_argument("--top-k", type=int, default=40, help="sample among the k likeliest tokens; 0 = all (default 40)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--tokenizer", help="SentencePiece model (default: the one saved with the export)")
    g.set_defaults(func=_generate)

    e = sub.add_parser(
        "eval",
        help="score a model on an evaluation suite (bits per byte, task accuracies), as an MLflow run",
        description="Score MODEL (a safetensors export, WORKDIR/model, or a Ray Train checkpoint folder) on an "
        "evaluation suite: held-out text in bits per byte, and zero-shot tasks (multiple choice, schema, "
        "language modelling) by the gold continuation's bits per byte, accuracy, length-normalized accuracy and "
        "centered accuracy. The results are an MLflow run (metrics eval.<set>.<metric>, eval.mean_bpb, "
        "eval/results.md) linked to the model's training run.",
        epilog=EPILOG + "\nExample:\n  tokenmill eval work/quickstart/train/model --suite configs/eval/core.yaml "
        "tasks.0.max_items=50\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("model", help="export folder or Ray Train checkpoint folder")
    e.add_argument("--suite", default=str(DEFAULT_SUITE), help="evaluation suite YAML (default configs/eval/core.yaml)")
    e.add_argument("--experiment", default="tokenmill-eval", help="MLflow experiment (default tokenmill-eval)")
    e.add_argument("--check", action="store_true", help="only validate the suite (with overrides) and exit")
    e.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="override any key of the suite")
    e.set_defaults(func=_eval)

    ab = sub.add_parser(
        "ablate",
        help="does a data recipe make better data? variants of a pipeline, proxy models over seeds, a verdict",
        description="Run every variant of a base pipeline (passes identical to the baseline's are shared, not "
        "rerun), train the same proxy model on each for the same token budget over several seeds, score every run "
        "on one evaluation suite, and print per metric each variant's mean and seed spread, its difference from "
        "the baseline, its signal-to-noise ratio and a verdict (better / worse / within noise). One MLflow run "
        "holds the table and plots; the pipelines and training runs are its children. A re-run resumes.",
        epilog=EPILOG + "\nExample:\n  tokenmill ablate configs/ablate/quickstart.yaml --workdir work/ablate\n"
        "  tokenmill ablate --report RUN_ID\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ab.add_argument("config", nargs="?", help="ablation YAML")
    ab.add_argument("--workdir", help="the ablation's folder (default work/ablate/<name>)")
    ab.add_argument("--report", metavar="RUN", help="print the verdict of an ablation's MLflow run and exit")
    ab.add_argument("--check", action="store_true", help="only validate the ablation and every variant's configs")
    ab.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="override any key of the ablation")
    ab.set_defaults(func=_ablate)

    d = sub.add_parser(
        "doctor",
        help="check the installation and a workdir, and say what is wrong and how to fix it",
        description="Check versions (the torch pin), that Ray can be started or reached (RAY_ADDRESS), that the "
        "MLflow store is reachable and writable; with WORKDIR also its lock (held, or stale from a dead process), "
        "MLflow runs left RUNNING, every manifest and the files it lists, the token shards and tokenizer, the dedup "
        "index, the model export and free disk. Exit 1 if anything is wrong.",
        epilog=EPILOG + "\nExample:\n  tokenmill doctor work/quickstart\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("workdir", nargs="?", help="a pipeline or training workdir to check")
    d.set_defaults(func=_doctor)

    x = sub.add_parser(
        "export-shards",
        help="write a token shard set in Megatron-LM, datatrove or dolma/OLMo files (no re-tokenizing)",
        description="Export the token shards of MANIFEST, verified while they are read, to another trainer's "
        "format, one part per shard in manifest order: megatron (.bin + .idx; ids in .doc_ids.jsonl), datatrove "
        "(.ds + .ds.index + .ds.metadata; ids in .ds.doc_ids.jsonl) or dolma (raw .npy memmap + .csv.gz with "
        "start,end,id,src,loc per document, what OLMo's MemMapDataset reads). Each document ends with its eos, "
        "as those formats' own tokenizers write it, unless --no-eos. OUT/export.json lists every file and sha256.",
        epilog=EPILOG + "\nExample:\n  tokenmill export-shards work/quickstart/tokens/manifest.json --format megatron "
        "--out work/megatron\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    x.add_argument("manifest", help="a token shard manifest.json")
    x.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    x.add_argument("--out", required=True, help="a new or empty folder")
    x.add_argument("--force", action="store_true", help="replace what --out holds (a folder's contents, or a file)")
    x.add_argument("--no-eos", action="store_true", help="export each document without its eos token")
    x.add_argument("--tokenizer-name", help="the name datatrove's .ds.metadata records (default: tokenmill-sha256-<sha>)")
    x.set_defaults(func=_export_shards)

    u = sub.add_parser(
        "ui",
        help="the MLflow UI for the configured store, on 127.0.0.1 unless told otherwise",
        description="Start the MLflow UI on the store MLFLOW_TRACKING_URI names (else MLflow's default), bound to "
        "127.0.0.1: other machines cannot reach it unless --host says so (e.g. --host 0.0.0.0 behind a firewall).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=5000)
    u.set_defaults(func=_ui)

    li = sub.add_parser(
        "lineage",
        help="the lineage of a training run, checkpoint or manifest, back to the raw files",
        description="Walk MLflow from START (a training or stage run id, a checkpoint folder, or a token or stage "
        "manifest.json) back through every run that made its inputs (tokenize, tokenizer, quality, dedup, filter, "
        "extract, ingest) to the raw input files (path, bytes, sha256); each run with its id, stage, key "
        "parameters, counts, code version and start time.",
        epilog=EPILOG + "\nExample:\n  tokenmill lineage work/quickstart/train/ray/quickstart-tiny/checkpoint_step00000120\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    li.add_argument("start", nargs="?", help="run id, checkpoint folder or manifest.json")
    li.add_argument("--doc", help="a document id: its fate in every pipeline of the store (dropped where and why, or "
                    "kept: its token shard and the training steps and ranks that read it)")
    li.add_argument("--run", help="a training run id (with --step)")
    li.add_argument("--step", type=int, help="the documents (ids, sources, tokens, ranks) of this step's global batch")
    li.add_argument("--spikes", metavar="TRAIN_RUN_ID",
                    help="the steps the training run flagged as loss spikes, with their batches' documents and sources")
    li.add_argument("--json", action="store_true", help="the same as JSON (every raw file listed)")
    li.add_argument("--format", choices=("text", "json", "openlineage"), default="text",
                    help="openlineage: OpenLineage run events, one JSON object per line (START and COMPLETE per run, "
                    "with its input and output datasets), for a lineage backend such as Marquez")
    li.add_argument("--verify", action="store_true",
                    help="re-hash the token shards, stage manifests and files, tokenizer and checkpoint the lineage "
                    "names and say what changed or is missing (exit 1 if anything did)")
    li.set_defaults(func=_lineage)
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
    from orchestration.runtime import stopping

    stopping.install()
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:  # SIGINT or SIGTERM (orchestration/runtime/stopping.py)
        signum = getattr(exc, "signum", signal.SIGINT)
        done = stopping.progress_note()
        stopping.say(f"tokenmill: stopped by {signal.Signals(signum).name}" + (f" ({done})" if done else "")
                     + "; re-run the same command to resume")
        return 128 + signum
    except Exception as exc:  # noqa: BLE001  (every failure ends as one line; the traceback goes to a log)
        return _fail(exc, getattr(args, "workdir", None))


# Ray's exceptions for a process or node that went away (named, so that the CLI need not import Ray)
RAY_NODE_FAULTS = ("NodeDiedError", "WorkerCrashedError", "ObjectLostError", "OwnerDiedError",
                   "ObjectReconstructionFailedError", "RaySystemError")


def _user_error(exc: BaseException) -> str | None:
    """One line for a failure caused by the input, the config or the machine; None for a bug."""
    from orchestration.corpus.dedup_index import DedupIndexError
    from orchestration.train.job import TrainingStopped
    from orchestration.runtime.workdir_lock import WorkdirBusy
    from pipelines.errors import MachineFault, UsageError
    from pipelines.evalsets import EvalSetError
    from pipelines.quality import ModelRejected
    from pipelines.readers.paths import InputError

    cause = getattr(exc, "cause", None)  # a Ray task's exception (RayTaskError) carries the worker's one
    if cause is not None and cause is not exc:
        inner = _user_error(cause)
        return None if inner is None else f"{getattr(exc, 'where', 'in a Ray task')}: {inner}"
    if isinstance(exc, ConfigError):
        return f"config error: {exc}"
    if isinstance(exc, (ShardIntegrityError, WorkdirBusy, DedupIndexError, InputError, TrainingStopped, UsageError,
                        ModelRejected, EvalSetError)):
        return f"error: {exc}"
    if isinstance(exc, MachineFault):  # its message says what to do
        return f"error: {exc}"
    if type(exc).__name__ in RAY_NODE_FAULTS:  # after Ray's own retries (a shard task: 3)
        return (f"error: a Ray node or worker process died ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                "a fault of the machine, not of the input: re-run to resume")
    fault = storage.connection_fault(exc)
    if fault is not None:  # an object store, MLflow server or Ray node gone after its layer's retries
        return (f"error: an endpoint could not be reached ({fault}); a fault of the machine or network, not of the "
                "input: re-run to resume once it is back")
    if isinstance(exc, OSError) and exc.errno is not None:  # no such file, permission denied, disk full, ...
        import errno

        where = f"{exc.filename}: " if exc.filename else ""
        then = {errno.ENOSPC: ": free some space, then re-run to resume",
                errno.EDQUOT: ": free some space, then re-run to resume",
                errno.EACCES: ": fix the permission, then re-run to resume",
                errno.EROFS: ": give a writable folder, then re-run to resume"}.get(exc.errno, "")
        return f"error: {where}{exc.strerror or exc}{then}"
    return None


def _fail(exc: BaseException, workdir: str | None) -> int:
    import datetime as dt
    import tempfile
    import traceback

    if isinstance(exc, ConfigError):  # the line says it all: no traceback worth a log
        print(f"tokenmill: config error: {exc}", file=sys.stderr)
        return 2
    text = "".join(traceback.format_exception(exc))
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    log = None
    from orchestration.runtime import console

    announced = console.log_folder()  # the folder the run's first line named, where it has one
    for folder in ([announced] if announced else []) + ([Path(workdir)] if workdir and Path(workdir).is_dir() else []) \
            + [Path(tempfile.gettempdir())]:
        try:
            log = folder / "tokenmill.log"
            with open(log, "a") as f:
                f.write(f"--- {stamp} tokenmill {' '.join(sys.argv[1:])}\n{text}\n")
            break
        except OSError:
            log = None
    line = _user_error(exc)
    where = f" (traceback in {log})" if log else ""
    if line is not None:
        print(f"tokenmill: {line}{where}", file=sys.stderr)
        return 2
    print(f"tokenmill: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{where}; "
          "please report it with that traceback", file=sys.stderr)
    return 1


def run() -> None:
    """The `tokenmill` command: main(), then an exit without the interpreter's finalization.

    Tearing down the modules a pipeline imported (Ray, MLflow, pyarrow, pandas, ...) took 1.1-1.3 s of a
    small pipeline's ~11 s (benchmarks/bench_startup.py). What that teardown does that matters is done here
    first, in the interpreter's own order: wait for the non-daemon threads, run the atexit handlers (Ray's
    shutdown, the Ray logs copied into the log folder, weakref finalizers, logging's flush), flush stdout and
    stderr. Only the command ends this way: main() called from Python returns as before.
    """
    import atexit
    import os
    import threading

    code = main()
    threading._shutdown()  # as the interpreter: threading's exit hooks (thread pools told to end), then the joins
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
            pass
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    run()
