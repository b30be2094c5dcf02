"""Data shipped with synth: a UDHR extract (real parallel text) for the demo and the tests."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
UDHR_DIR = DATA_DIR / "udhr"


def udhr_path(code: str) -> Path:
    """Path of the UDHR file for a package code such as 'zul' or 'eng' (one article per line)."""
    return UDHR_DIR / f"{code}.txt"


def udhr_articles(code: str) -> list[str]:
    return udhr_path(code).read_text(encoding="utf-8").splitlines()
