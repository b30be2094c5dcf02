"""Do the new filter defaults keep data that trains better? Downstream evidence for issue 12.

Per language (UDHR sentence pairs of related Bantu languages against English, synth's own
segmenter's alignment, synth.testing.udhr_bitext): the source sentences of articles 1-20 are the
corpus, the sentences and whole articles of articles 21-30 the held-out evaluation bitext. The
test server answers every translation prompt from a scripted answers file: the true English
sentence for most, and for about 30% (seeded) a bad answer of the kinds a weak LLM gives:

- mismatched: the English of another sentence of the corpus (fluent, on topic, wrong);
- hallucination: fluent English about something else;
- prompt_echo: the system prompt returned as the answer;
- truncation: the true English cut after 40-70% of its words, at a word boundary.

Round trips (English back into the source language) are answered from the same file: an English
sentence of the corpus comes back as its source sentence (so a mismatched answer comes back as
the other sentence), anything else gets the server's default answer.

Two datasets per language with `synth backtranslate` (same server, same cache): the new defaults,
and the old ones (`--min-margin 1.0 --min-null-z off --round-trip off --whole-segment
--max-prompt-echo off`). Then `synth evaluate` on each with its defaults and `--eval` the held-out
bitext, the new one with `--ablation rejects` (kept + rejected: what the filters bought).
Printed: per language the pairs each kept (good / bad by kind), and the held-out retrieval of the
student trained on each.

    .venv/bin/python bench/filters_eval.py                    # zul,xho,nya,sna: ~10 min on 2 cores
    .venv/bin/python bench/filters_eval.py --langs zul --bad 0.3
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth.generate.tasks.backtranslate import BacktranslationPrompt  # noqa: E402
from synth.languages import normalize_language  # noqa: E402
from synth.testing.server_process import start_server  # noqa: E402
from synth.testing.udhr_bitext import article_pairs, sentence_pairs, write_tsv  # noqa: E402

SYNTH = Path(sys.executable).with_name("synth")
OLD = ["--min-margin", "1.0", "--min-null-z", "off", "--round-trip", "off", "--whole-segment", "--max-prompt-echo", "off"]
HALLUCINATIONS = [
    "The cat is sleeping on the warm windowsill.", "I like to eat apples and bananas in the morning.",
    "The weather today is sunny with a light breeze.", "He bought a new car last week and drove it to the beach.",
    "Please remember to water the plants on Sunday.", "The football match ended in a draw after extra time.",
    "My grandmother makes the best chocolate cake.", "The train to the city leaves at seven o'clock.",
]
KINDS = {"mismatched": 0.5, "hallucination": 0.17, "prompt_echo": 0.17, "truncation": 0.16}  # shares of the bad answers


def script(pairs: list[tuple[str, str]], bad: float, seed: int) -> tuple[list[dict], dict[str, str]]:
    """The answers file's entries, and each source sentence's kind (good or a fault)."""
    rng = random.Random(seed)
    system = BacktranslationPrompt.load().template.system
    kinds, entries = {}, []
    order = rng.sample(range(len(pairs)), len(pairs))
    bad_rows = set(order[: round(bad * len(pairs))])
    for index, (source, english) in enumerate(pairs):
        kind = "good" if index not in bad_rows else rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        if kind == "mismatched":
            answer = pairs[rng.choice([j for j in range(len(pairs)) if pairs[j][1] != english])][1]
        elif kind == "hallucination":
            answer = rng.choice(HALLUCINATIONS)
        elif kind == "prompt_echo":
            answer = system
        elif kind == "truncation":
            words = english.split()
            answer = " ".join(words[: max(2, round(len(words) * rng.uniform(0.4, 0.7)))])
        else:
            answer = english
        kinds[source] = kind
        entries.append({"match": source, "answer": answer})
    # Round trips: an English sentence of the corpus back into its source sentence.
    entries += [{"match": english, "answer": source} for english, source in dict((e, s) for s, e in pairs).items()]
    return entries, kinds


def backtranslate(corpus: Path, lang: str, out: Path, server, cache: Path, extra: list[str]) -> None:
    subprocess.run(
        [str(SYNTH), "backtranslate", str(corpus), "--lang", lang, "--out", str(out), "--base-url", server.base_url,
         "--model", "udhr-oracle", "--cache-dir", str(cache), "--splits", "train", "--log-format", "json", *extra],
        check=True, capture_output=True, env={**os.environ, "OPENAI_API_KEY": "test"},
    )


def evaluate(dataset: Path, held_out: Path, extra: list[str], seeds: list[int]) -> list[dict]:
    """One evaluation per training seed."""
    runs = []
    for seed in seeds:
        subprocess.run([str(SYNTH), "evaluate", str(dataset), "--eval", str(held_out), "--no-card", "--seed", str(seed), *extra],
                       check=True, capture_output=True)
        runs.append(json.loads((dataset / "eval" / "results.json").read_text(encoding="utf-8")))
    return runs


def kept_kinds(dataset: Path, kinds: dict[str, str]) -> Counter:
    import polars as pl

    files = sorted((dataset / "data").glob("*.parquet"))
    texts = pl.concat([pl.read_parquet(f, columns=["text"]) for f in files])["text"].to_list() if files else []
    return Counter(kinds.get(text, "?") for text in texts)


def scores(runs: list[dict], method: str) -> dict:
    """The held-out set's metrics of `method`, averaged over the seeds."""
    rows = [next(r for r in results["eval"] if r["name"] != "test")[method] for results in runs]
    return {key: sum(row[key] for row in rows) / len(rows) for key in ("accuracy_src2tgt", "accuracy_tgt2src", "mrr")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", default="zul,xho,nya,sna")
    parser.add_argument("--bad", type=float, default=0.3, help="share of bad answers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep the datasets in this folder")
    parser.add_argument("--seeds", default="0", help="training seeds of the student (scores averaged over them)")
    args = parser.parse_args()
    started = time.time()
    report = []
    with tempfile.TemporaryDirectory(prefix="bench-filters-eval-") as scratch:
        root = args.keep or Path(scratch)
        for code in args.langs.split(","):
            lang = normalize_language(code)
            train = sentence_pairs(code, articles=range(20))
            held_out = write_tsv(article_pairs(code, articles=range(20, 30)) + sentence_pairs(code, articles=range(20, 30)), root / code / "held-out.tsv")
            corpus = root / code / "corpus.txt"
            corpus.write_text("\n".join(source for source, _ in train) + "\n", encoding="utf-8")
            entries, kinds = script(train, args.bad, args.seed)
            (root / code / "answers.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
            with start_server("--answers", str(root / code / "answers.json")) as server:
                for name, extra in (("new", []), ("old", OLD)):
                    backtranslate(corpus, lang, root / code / name, server, root / code / "cache", extra)
            print(f"{code}: datasets built ({time.time() - started:.0f} s)", file=sys.stderr)
            seeds = [int(seed) for seed in args.seeds.split(",")]
            new = evaluate(root / code / "new", held_out, ["--ablation", "rejects"], seeds)
            old = evaluate(root / code / "old", held_out, [], seeds)
            for name, runs in (("new", new), ("old", old)):
                print(f"{code} {name}: evaluation {sum(r['seconds'] for r in runs):.0f} s, {json.dumps(runs[0].get('timing'))}", file=sys.stderr)
            report.append((code, Counter(kinds.values()), kept_kinds(root / code / "new", kinds), kept_kinds(root / code / "old", kinds), new, old))
            print(f"{code}: done ({time.time() - started:.0f} s)", file=sys.stderr)

    print("\n## Pairs kept (good of all good; bad kept by kind)\n")
    print("| language | pairs | bad | new: good kept | new: bad kept | old: good kept | old: bad kept |\n|---|---:|---:|---:|---|---:|---|")
    for code, all_kinds, new_kept, old_kept, _, _ in report:
        bad_kept = lambda kept: ", ".join(f"{k} {n}" for k, n in kept.items() if k != "good") or "0"  # noqa: E731
        print(f"| {code} | {sum(all_kinds.values())} | {sum(all_kinds.values()) - all_kinds['good']} "
              f"| {new_kept['good']}/{all_kinds['good']} | {bad_kept(new_kept)} | {old_kept['good']}/{all_kinds['good']} | {bad_kept(old_kept)} |")
    print(f"\n## Held-out retrieval (sentences and articles 21-30): top-1 src→tgt / tgt→src, MRR; mean over seeds {args.seeds}\n")
    print("| language | pairs | base | new defaults' kept | old defaults' kept | new kept + rejected |\n|---|---:|---|---|---|---|")
    fmt = lambda s: f"{s['accuracy_src2tgt']:.3f} / {s['accuracy_tgt2src']:.3f}, **{s['mrr']:.3f}**"  # noqa: E731
    for code, _, _, _, new, old in report:
        pairs = next(r for r in new[0]["eval"] if r["name"] != "test")["pairs"]
        print(f"| {code} | {pairs} | {fmt(scores(new, 'base'))} | {fmt(scores(new, 'finetuned'))} | {fmt(scores(old, 'finetuned'))} "
              f"| {fmt(scores(new, 'finetuned_with_rejects'))} |")
    print(f"\n{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
