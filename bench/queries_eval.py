"""What do the query filters buy a retriever? `synth queries` then `synth evaluate`, on UDHR.

For each language: the 30 bundled UDHR articles are the passages, and the test server writes English
queries for them (its query oracle: an article's longest English words), except that for every
third (passage, kind) it answers with the query of another article (a stray: the fault the round
trip and the relevance check are there to drop). `synth queries` publishes the dataset with a test
split of a third of the passages, with or without the relevance check (`--relevance-check`); then
`synth evaluate DATASET --ablation rejects` trains the student on the kept queries and, apart, on
every query (kept + rejected), and scores query -> passage retrieval on the test split (recall@10,
MRR@10). Printed: per language, queries kept / strays among them, and the scores of each student.

    .venv/bin/python bench/queries_eval.py --langs zul,swh,hau,yor --relevance-check borderline --json eval.json
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth.data import udhr_articles, udhr_path  # noqa: E402
from synth.generate.tasks.queries import QueryPrompt  # noqa: E402
from synth.testing.oracles import KIND_WORDS, LONG_WORDS  # noqa: E402
from synth.testing.server_process import start_server  # noqa: E402

KINDS = ["keyword", "question", "long"]
SYNTH = str(ROOT / ".venv" / "bin" / "synth")


def longest_words(text: str, n: int) -> str:
    words = dict.fromkeys(word.strip(".,;:!?()\"'«»“”") for word in text.split())
    return " ".join(sorted((w for w in words if w), key=len, reverse=True)[:n])


def strays(lang: str) -> tuple[list[dict], set[tuple[int, str]]]:
    """Scripted answers: every third (passage, kind) gets the query of the article 7 further on."""
    prompt, english, articles = QueryPrompt.load(), udhr_articles("eng"), udhr_articles(lang)
    answers, bad = [], set()
    for number, article in enumerate(articles):
        for k, kind in enumerate(KINDS):
            if (number * len(KINDS) + k) % 3:
                continue
            words = next((n for marker, n in KIND_WORDS if marker in prompt.instructions[kind]), LONG_WORDS)
            match = prompt.messages(article, kind, 1, lang, "en")[-1]["content"]
            answers.append({"match": match, "answer": f"1. {longest_words(english[(number + 7) % 30], words)}"})
            bad.add((number, kind))
    return answers, bad


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)}\nexited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", default="zul,swh,hau,yor")
    parser.add_argument("--relevance-check", default="borderline", choices=["borderline", "off"])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-queries-eval")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    summary = {}
    import pyarrow.parquet as pq

    def synth_queries(lang: str, folder: Path, *options: str) -> None:
        with start_server("--answers", str(folder.parent / "answers.json")) as server:
            _run([
                SYNTH, "queries", str(udhr_path(lang)), "--lang", lang, "--query-lang", "en", "--out", str(folder),
                "--base-url", server.base_url, "--model", "udhr-oracle", "--splits", "test=0.34",
                "--cache-dir", str(args.out / "cache"), *options,
            ])

    def evaluate(folder: Path, eval_file: Path) -> dict:
        _run([
            SYNTH, "evaluate", str(folder), "--eval", str(eval_file), "--epochs", str(args.epochs), "--out", str(folder / "eval"),
            "--no-card",
        ])
        results = json.loads((folder / "eval" / "results.json").read_text())
        scores = next(e for e in results["eval"] if e["name"] != "test")
        return {"train": results["train_pairs"], "test": scores["pairs"], **{m: scores[m] for m in ("base", "finetuned")}}

    for lang in args.langs.split(","):
        started = time.time()
        answers, bad = strays(lang)
        root = args.out / lang
        root.mkdir(parents=True, exist_ok=True)
        (root / "answers.json").write_text(json.dumps(answers), encoding="utf-8")
        # The kept queries (every filter, the relevance check as asked) and every query (only the
        # cheap filters: no embedder, so no round trip and no relevance check); the same passages
        # go to the test split in both (split by passage id).
        synth_queries(lang, root / "kept", "--relevance-check", args.relevance_check)
        synth_queries(lang, root / "every", "--embedder", "none", "--relevance-check", "off")
        articles = udhr_articles(lang)

        def rows(folder: Path, config: str = "data", split: str = "") -> list[dict]:
            return [r for f in sorted((folder / config).glob(f"{split}*.parquet")) for r in pq.read_table(f).to_pylist()]

        kept, every = rows(root / "kept"), rows(root / "every")
        # One test set for both students: the good queries of the held-out passages.
        test = [r for r in rows(root / "every", split="test") if (articles.index(r["passage"]), r["kind"]) not in bad]
        eval_file = root / "test-good.jsonl"
        eval_file.write_text("".join(json.dumps({"src": r["passage"], "tgt": r["query"]}) + "\n" for r in test), encoding="utf-8")
        stats = json.loads((root / "kept" / "stats.json").read_text())
        row = {
            "strays": len(bad), "kept": len(kept), "strays_kept": sum((articles.index(r["passage"]), r["kind"]) in bad for r in kept),
            "every": len(every), "strays_every": sum((articles.index(r["passage"]), r["kind"]) in bad for r in every),
            "asked": (stats["generation"].get("stages") or {}).get("relevance", {}).get("asked", 0),
            "on_kept": evaluate(root / "kept", eval_file), "on_every": evaluate(root / "every", eval_file),
            "seconds": round(time.time() - started),
        }
        summary[lang] = row
        print(lang, json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
