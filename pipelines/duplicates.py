"""Marking documents as duplicates of a survivor (shared by exact and near-duplicate removal)."""

from __future__ import annotations

import pyarrow as pa

from pipelines.records import REASON, dump_metadata, load_metadata


def mark_duplicates(docs: pa.Table, dups: pa.Table, reason: str) -> pa.Table:
    """Set `reason` and metadata.duplicate_of on the docs listed in dups (columns id, value=survivor and,
    optionally, run: the earlier run that kept the survivor, as metadata.duplicate_of_run)."""
    survivor_of = dict(zip(dups.column("id").to_pylist(), dups.column("value").to_pylist()))
    run_of = dict(zip(dups.column("id").to_pylist(), dups.column("run").to_pylist())) if "run" in dups.column_names else {}
    if not survivor_of:
        return docs
    metas = docs.column("metadata").to_pylist()
    reasons = docs.column(REASON).to_pylist()
    for i, doc_id in enumerate(docs.column("id").to_pylist()):
        survivor = survivor_of.get(doc_id)
        if survivor is not None:
            meta = load_metadata(metas[i])
            meta["duplicate_of"] = survivor
            if run_of.get(doc_id):
                meta["duplicate_of_run"] = run_of[doc_id]
            metas[i], reasons[i] = dump_metadata(meta), reason
    docs = docs.set_column(docs.schema.get_field_index("metadata"), "metadata", pa.array(metas, pa.string()))
    return docs.set_column(docs.schema.get_field_index(REASON), REASON, pa.array(reasons, pa.string()))
