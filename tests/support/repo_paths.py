"""Where the repository and the shared corpora are (one definition for every test and helper)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPORA = REPO.parent / "shared" / "corpora"
EVALS = REPO.parent / "shared" / "evals"
DOLMA_CRAWL = "dolma_fixtures/CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"  # under CORPORA
