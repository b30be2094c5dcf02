"""Issue 12's rules, each where it can fail: a verbatim prompt dropped, a hallucination in a chunk
of hallucinations dropped (the absolute floor), a borderline pair decided by its round trip."""

import pytest

from synth.config import PairFilterSettings
from synth.data import udhr_articles
from synth.filters.embedding import EmbeddingConsistencyFilter
from synth.filters.heuristics import PromptEchoFilter, instruction_texts
from synth.filters.pairs import pair_embedder, pair_filter_chain
from synth.filters.roundtrip import RoundTripStage, chrf
from synth.generate.request import parsed_anyway
from synth.generate.tasks.backtranslate import BacktranslationPrompt
from synth.testing.openai_server import UdhrOracle
from synth.testing.oracles import RoundTripOracle

from conftest import Memo

ZU, EN, WO = (udhr_articles(code) for code in ("zul", "eng", "wol"))
PROMPT = BacktranslationPrompt.load()
# What a 135M model answered for UDHR lines it could not translate: fluent, unrelated English.
HALLUCINATIONS = [
    "Let's go to the moon, let's go to the moon.", "The cat is sleeping on the warm windowsill.",
    "I like to eat apples and bananas in the morning.", "The weather today is sunny with a light breeze.",
    "He bought a new car last week and drove it to the beach.", "Please remember to water the plants on Sunday.",
    "The football match ended in a draw after extra time.", "My grandmother makes the best chocolate cake.",
    "The train to the city leaves at seven o'clock.", "We watched a movie about dinosaurs and spaceships.",
    "The children are playing in the garden with a red ball.", "She sings a song about the ocean every night.",
    "The library closes early on public holidays.", "A small bird built its nest in the old tree.",
    "Turn left at the bakery and walk two blocks.", "The recipe needs three eggs and a cup of flour.",
]


def pair(text: str, translation: str, lang: str = "zu") -> dict:
    return {"text": text, "translation": translation, "lang": lang, "pivot_lang": "en"}


@pytest.fixture(scope="module")
def embedder():
    return Memo(pair_embedder(PairFilterSettings()))


def test_a_verbatim_system_prompt_is_dropped_as_such():
    instructions = instruction_texts(PROMPT.template, source_language="Zulu", target_language="English")
    rows = [
        pair(ZU[2], PROMPT.template.system),                                                     # verbatim
        pair(ZU[3], "You are a professional translator; you translate faithfully and completely."),  # nearly
        pair(ZU[4], "Translate the following Zulu text into English. Answer with the English translation only."),
        pair(ZU[5], EN[5]),
    ]
    verdicts = PromptEchoFilter(instructions).judge(rows)
    assert [v and v.split(":")[0] for v in verdicts] == ["prompt_echo", "prompt_echo", "prompt_echo", None]
    # In the default chain, before anything else could keep or drop it for another reason.
    chain = pair_filter_chain(PairFilterSettings(embedder="none", lid_detectors=[]), instructions=instructions)
    kept, rejected = chain.run([dict(row) for row in rows])
    assert [row["reject_stage"] for row in rejected] == ["prompt_echo"] * 3 and len(kept) == 1
    # The control: no good UDHR pair (30 articles, Zulu-English) repeats the prompt.
    assert PromptEchoFilter(instructions).judge([pair(z, e) for z, e in zip(ZU, EN)]) == [None] * 30


def test_a_hallucination_in_a_chunk_of_hallucinations_is_dropped(embedder):
    # Sixteen Zulu articles "translated" into unrelated fluent English, two good pairs among them.
    rows = [pair(ZU[i], text) for i, text in enumerate(HALLUCINATIONS)] + [pair(ZU[20], EN[20]), pair(ZU[21], EN[21])]
    # As the job runs it: the absolute floor drops what is no better than an unrelated pair, the
    # round trip decides what stands out no further than chance (the best of n unrelated pairs).
    judged = [dict(row) for row in rows]
    verdicts = EmbeddingConsistencyFilter(embedder, borderline=True).judge(judged)
    floor_drops = [v for v in verdicts[:16] if v]
    assert len(floor_drops) >= 10 and all(v.startswith("null_z:") for v in floor_drops)
    kept = [row for row, verdict in zip(judged, verdicts) if verdict is None]
    stage = RoundTripStage(PROMPT, "zu", "en", "borderline", 40.0)
    asked = stage.requests(kept)
    # A model translating a hallucination back gives Zulu about something else: another article here.
    answers = {index: parsed_anyway(stage.parse, request, ZU[(ZU.index(kept[index]["text"]) + 7) % 30]
                                    if kept[index]["translation"] in HALLUCINATIONS else ZU[ZU.index(kept[index]["text"])])
               for index, request in asked}
    decided = stage.judge(kept, answers, [row for row, verdict in zip(judged, verdicts) if verdict])
    survivors = [row["translation"] for row, verdict in zip(kept, decided) if verdict is None]
    assert not set(survivors) & set(HALLUCINATIONS), survivors
    # The control: the relative margin alone keeps some of them (their neighbours are worse).
    margin_only = EmbeddingConsistencyFilter(embedder, min_null_z=None).judge([dict(row) for row in rows])
    assert any(verdict is None for verdict in margin_only[:16])


def test_a_borderline_pair_is_decided_by_its_round_trip(embedder):
    # Wolof, which the packaged embedder barely knows: its good pairs score low, many undecided.
    rows = [pair(WO[i], EN[i], "wo") for i in range(30)]
    rows[0]["translation"] = EN[29 - 0]  # one bad pair: another article's translation
    rows[29]["translation"] = EN[0]
    judged = [dict(row) for row in rows]
    verdicts = EmbeddingConsistencyFilter(embedder, borderline=True).judge(judged)
    borderline = [i for i, row in enumerate(judged) if row["borderline"]]
    assert borderline, "no Wolof pair left undecided"
    # Without the round trip these same rows are decided by the embeddings, good ones dropped among them.
    plain = EmbeddingConsistencyFilter(embedder).judge([dict(row) for row in rows])
    assert any(plain[i] is not None for i in borderline if i not in (0, 29))
    # The round trip: the test server's oracle translates the English back into Wolof.
    kept = [row for row, verdict in zip(judged, verdicts) if verdict is None]
    stage = RoundTripStage(PROMPT, "wo", "en", "borderline", 40.0)
    asked = stage.requests(kept)
    assert {index for index, _ in asked} == {i for i, row in enumerate(kept) if row["borderline"]}
    oracle = RoundTripOracle(UdhrOracle().find)
    answers = {index: parsed_anyway(stage.parse, request, oracle.answer(request.messages[-1]["content"])) for index, request in asked}
    decided = stage.judge(kept, answers, [row for row, verdict in zip(judged, verdicts) if verdict])
    for index, _ in asked:
        row = kept[index]
        good = row["translation"] == EN[WO.index(row["text"])]
        assert (decided[index] is None) == good, (row["text"][:40], decided[index], row.get("round_trip_chrf"))
    assert stage.counts["rescued"] >= 1
    # The swapped ones are gone, whichever step dropped them.
    survivors = {row["text"] for row, verdict in zip(kept, decided) if verdict is None}
    assert WO[0] not in survivors and WO[29] not in survivors


def test_the_band_is_bounded_below_by_the_absolute_score_not_the_margin():
    from synth.filters.embedding import undecided

    # A good pair of a language the embedder barely knows, in a chunk of related texts: its margin
    # is low (its neighbours are close) but it stands above the average unrelated pair: undecided.
    assert undecided({"margin": 0.2, "null_z": 0.8}, 0.9, 2.5)
    # No better than the average unrelated pair: clearly bad, whatever its margin.
    assert not undecided({"margin": 1.2, "null_z": -0.3}, 0.9, 2.5)
    # Clearly good: margin at the cut and beyond chance.
    assert not undecided({"margin": 1.2, "null_z": 3.0}, 0.9, 2.5)


def test_chrf_is_sacrebleus():
    assert chrf(WO[3], WO[3]) == 100.0
    assert chrf(WO[4], WO[3]) < 40.0
