"""Records from a Hugging Face `datasets` dataset, read in index ranges so work can be spread out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from pipelines.records import dump_metadata, make_id, quarantine
from pipelines.reasons import MISSING_TEXT, TEXT_NOT_STRING


def open_dataset(name_or_path: str, split: str):
    """A local `save_to_disk` folder, or a hub name (downloaded to the HF cache where the network allows)."""
    import datasets

    path = Path(name_or_path)
    if path.exists():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{name_or_path}: no split {split!r} (has {', '.join(ds)})")
            ds = ds[split]
        return ds
    return datasets.load_dataset(name_or_path, split=split)


def read_range(
    name_or_path: str,
    split: str,
    source: str,
    start: int,
    stop: int,
    *,
    text_field: str = "text",
    id_field: str | None = None,
    url_field: str | None = "url",
    batch_size: int = 1000,
) -> Iterator[dict[str, list]]:
    ds = open_dataset(name_or_path, split)
    prefix = f"{source}/{split}"
    for lo in range(start, stop, batch_size):
        rows = ds[lo : min(stop, lo + batch_size)]  # columnar dict
        n = len(next(iter(rows.values()))) if rows else 0
        cols: dict[str, list] = {k: [] for k in ("id", "text", "source", "url", "metadata", "_reason")}
        for j in range(n):
            rec = {k: v[j] for k, v in rows.items()}
            _append(cols, rec, prefix, lo + j, source, text_field, id_field, url_field)
        yield cols


def _append(cols, rec: dict[str, Any], prefix, index, source, text_field, id_field, url_field) -> None:
    text = rec.pop(text_field, None)
    own_id = rec.get(id_field) if id_field else None
    cols["id"].append(f"{prefix}#{own_id}" if own_id is not None else make_id(prefix, index))
    cols["source"].append(source)
    url = rec.get(url_field) if url_field else None
    cols["url"].append(url if isinstance(url, str) else "")
    meta = {"record": index, **{k: v for k, v in rec.items() if _jsonable(v)}}
    cols["metadata"].append(dump_metadata(meta))
    if isinstance(text, str):
        cols["text"].append(text)
        cols["_reason"].append("")
    else:
        cols["text"].append("")
        cols["_reason"].append(quarantine(MISSING_TEXT if text is None else TEXT_NOT_STRING))


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
