"""Where the attack corpora live: a copy in tests/data (so any clone can run the suite), and the shared original."""

from pathlib import Path

OPEN_REDIRECTS = Path(__file__).resolve().parents[1] / "data" / "open-redirects.txt"
SHARED_OPEN_REDIRECTS = Path(__file__).resolve().parents[3] / "shared" / "corpora" / "open-redirects.txt"
