"""Before the passes: the decontamination stage's n-gram index of its evaluation suite, built once per suite digest
and n (WORKDIR/decontam/<digest>-n<n>.npz; a re-run, or another pipeline in the workdir, reuses it)."""

from __future__ import annotations

import dataclasses
import time

from orchestration.corpus.steps import before
from pipelines import storage
from pipelines.stages.decontaminate import DecontaminateStage


@before(DecontaminateStage)
def build_ngram_index(cfg, workdir: storage.StoragePath, echo) -> None:
    d = cfg.decontaminate
    if not d.enabled:
        return
    from orchestration.evaluation.run import load_suite
    from pipelines.decontam import build_index
    from pipelines.evalsets import suite_digest, suite_texts

    suite = load_suite(d.suite)
    digest = suite_digest(suite)
    out = workdir / "decontam" / f"{digest}-n{d.ngram}.npz"
    if out.is_file():
        echo(f"tokenmill: decontamination index of suite {suite.name!r} ({digest[:12]}...) already built: {out}")
    else:
        start = time.perf_counter()
        items = suite_texts(suite)
        index = build_index(items, d.ngram)
        scratch = storage.scratch_for(out)
        index.save(scratch)
        storage.publish(scratch, out)
        echo(f"tokenmill: decontamination index of suite {suite.name!r}: {len(index.keys):,} {d.ngram}-grams of "
             f"{len(items):,} evaluation items and documents ({time.perf_counter() - start:.1f}s) -> {out}")
    cfg.decontaminate = dataclasses.replace(d, index_path=str(out))
