"""A Hugging Face `datasets` dataset: rows [start, stop) of one split, read in slices so work can be spread out.

A row is what a parquet row is (datasets are Arrow tables): the same `parquet_row` makes it a Row, so the text
checks, the quarantine reasons, dotted id and URL fields and the JSON metadata are the file readers'. Ids:
`{input}/{split}#{index}` (make_id), or `{input}#{own id}` with `id_field`, as for files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from pipelines.readers.parquet import parquet_row
from pipelines.readers.rows import Row


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


def iter_hf(name_or_path: str, split: str, start: int, stop: int, text_field: str, id_field: str | None,
            url_field: str | None, batch_size: int = 1000) -> Iterator[Row]:
    ds = open_dataset(name_or_path, split)
    stop = min(stop, len(ds))
    for lo in range(start, stop, batch_size):
        for j, rec in enumerate(ds.data.slice(lo, min(stop, lo + batch_size) - lo).to_pylist()):
            yield parquet_row(lo + j, rec, text_field, id_field, url_field)
