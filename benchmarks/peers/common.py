"""What both peer chain scripts share (each runs in its own peer's venv, with this folder on its sys.path)."""

import argparse
import gzip


def parser(doc: str, output_help: str, workers_help: str) -> argparse.ArgumentParser:
    """The command line bench_peers.py calls every peer script with: --input, --output, --workers."""
    ap = argparse.ArgumentParser(description=doc.split("\n", 1)[0])
    ap.add_argument("--input", required=True, help="folder of *.jsonl.gz files with {id, text} lines")
    ap.add_argument("--output", required=True, help=output_help)
    ap.add_argument("--workers", type=int, default=2, help=workers_help)
    return ap


def count_lines(paths: list[str]) -> int:
    """Documents (non-blank JSON lines) in jsonl / jsonl.gz files."""
    n = 0
    for p in paths:
        with (gzip.open(p, "rt", encoding="utf-8") if p.endswith(".gz") else open(p, encoding="utf-8")) as f:
            n += sum(1 for line in f if line.strip())
    return n
