"""Session fixture: a small fastText language-ID model trained on udhr2 (every language, held-out
half kept for evaluation). conftest.py re-exports `trained_langid_model`:

    from langid_fixture import trained_langid_model  # noqa: F401
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from pipelines.langid import load_samples_from_folder, train_langid_model
from repo_paths import CORPORA

UDHR = CORPORA / "udhr2"


@lru_cache(maxsize=1)
def udhr_split() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(train, held_out): alternate lines of each udhr2 language file (labels: eng, fra, azj_Cyrl, ...)."""
    if not UDHR.is_dir():
        pytest.skip(f"udhr2 corpus not found at {UDHR} (shared/corpora next to the repository)")
    samples = load_samples_from_folder(UDHR)
    return {k: v[0::2] for k, v in samples.items()}, {k: v[1::2] for k, v in samples.items()}


@pytest.fixture(scope="session")
def trained_langid_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a fastText LID model (~370 labels, dim 16, ~14 MB) trained in a few seconds."""
    train, _ = udhr_split()
    return train_langid_model(train, tmp_path_factory.mktemp("langid") / "udhr_lid.bin", seed=0)
