"""The OpenAI-compatible test server, exercised as a real process through the real `openai` client."""

import asyncio
import json
import time
from pathlib import Path

import openai
import pytest

from synth.data import udhr_articles
from synth.testing.openai_server import FaultInjector, prompt_key
from synth.testing.server_process import ServerProcess, start_server

MODEL = "udhr-oracle"
ZULU = udhr_articles("zul")
ENGLISH = udhr_articles("eng")


def client(server: ServerProcess, api_key: str = "test-key", timeout: float = 10.0) -> openai.OpenAI:
    # No retries: each call is exactly one request, so faults surface as exceptions.
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, timeout=timeout)


def ask(llm: openai.OpenAI, prompt: str, model: str = MODEL) -> str | None:
    completion = llm.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
    return completion.choices[0].message.content


def translation_prompt(text: str) -> str:
    return f"Translate the following Zulu text into English:\n\n{text}"


def test_oracle_answers_the_english_article(openai_server: ServerProcess) -> None:
    llm = client(openai_server)
    completion = llm.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are a careful translator."},
            {"role": "user", "content": translation_prompt(ZULU[0])},
        ],
    )
    assert completion.choices[0].message.content == ENGLISH[0]
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL
    assert completion.id.startswith("chatcmpl-")
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(ENGLISH[0].split())
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    # Any language, wherever the article sits in the prompt, whatever its line breaks; Amharic
    # (words separated by "፡", not spaces) takes the unindexed path of the oracle.
    assert ask(llm, f'Article: "{ZULU[29].replace(" ", chr(10))}" Translate it.') == ENGLISH[29]
    assert ask(llm, translation_prompt(udhr_articles("amh")[4])) == ENGLISH[4]
    assert ask(llm, "What is the capital of Zululand?") == "I do not know."
    assert [model.id for model in llm.models.list()] == [MODEL]


def test_answers_file_comes_before_the_oracle(tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(
        json.dumps(
            [
                {"match": "Zulu", "answer": "short match"},
                {"match": "the following Zulu text", "answer": "long match"},
            ]
        ),
        encoding="utf-8",
    )
    with start_server("--answers", str(answers), "--default-answer", "no idea") as server:
        llm = client(server)
        assert ask(llm, translation_prompt(ZULU[0])) == "long match"  # longest match wins
        assert ask(llm, f"Zulu:\n{ZULU[0]}") == "short match"
        assert ask(llm, f"In English:\n{ZULU[0]}") == ENGLISH[0]  # no match: the oracle
        assert ask(llm, "Anything else?") == "no idea"


def test_fault_plan_applies_per_prompt() -> None:
    with start_server("--fault-plan", "500,429", "--retry-after", "0.05") as server:
        llm = client(server)
        prompt = translation_prompt(ZULU[1])
        with pytest.raises(openai.InternalServerError):
            ask(llm, prompt)
        with pytest.raises(openai.RateLimitError) as rate_limited:
            ask(llm, prompt)
        assert rate_limited.value.response.headers["Retry-After"] == "0.05"
        assert ask(llm, prompt) == ENGLISH[1]
        # Another prompt walks through the plan on its own.
        with pytest.raises(openai.InternalServerError):
            ask(llm, translation_prompt(ZULU[2]))
        assert server.stats()["by_status"] == {"500": 2, "429": 1, "200": 1}


def test_malformed_and_empty_answers() -> None:
    with start_server("--fault-plan", "malformed,empty") as server:
        llm = client(server)
        prompt = translation_prompt(ZULU[3])
        # A 200 whose body is not JSON: openai raises json.JSONDecodeError (a ValueError), not an APIError.
        with pytest.raises((openai.APIError, ValueError)):
            ask(llm, prompt)
        assert ask(llm, prompt) == ""
        assert ask(llm, prompt) == ENGLISH[3]


def test_hang_outlasts_the_client_timeout_and_frees_its_slot() -> None:
    with start_server("--fault-plan", "hang", "--hang-seconds", "5", "--slots", "1") as server:
        impatient = client(server, timeout=0.3)
        prompt = translation_prompt(ZULU[4])
        with pytest.raises(openai.APITimeoutError):
            ask(impatient, prompt)
        # The server notices the disconnect and cancels the hung request: the only slot is free again.
        assert ask(client(server, timeout=3.0), prompt) == ENGLISH[4]
        stats = server.stats()
        assert stats["by_status"] == {"499": 1, "200": 1}
        assert stats["busy_slot_seconds"] < 2.0


def test_random_faults_are_reproducible_from_the_seed() -> None:
    prompts = [translation_prompt(article) for article in ZULU[:12]]
    with start_server("--seed", "7", "--rate-500", "0.5") as server:
        llm = client(server)
        failed = []
        for prompt in prompts:
            try:
                ask(llm, prompt)
                failed.append(False)
            except openai.InternalServerError:
                failed.append(True)
    # The same draws as the server's own: one per request from random.Random(seed), in request order.
    expected = FaultInjector((), {"500": 0.5}, seed=7)
    assert failed == [expected.pick(prompt_key([{"role": "user", "content": p}])) == "500" for p in prompts]
    assert True in failed and False in failed


def test_unknown_model_is_not_found(openai_server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        ask(client(openai_server), "Hello", model="gpt-nonexistent")
    assert not_found.value.code == "model_not_found"
    assert "gpt-nonexistent" in not_found.value.message


def test_streaming_is_refused(openai_server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError):
        client(openai_server).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}], stream=True
        )


def test_api_key_is_checked() -> None:
    with start_server("--api-key", "secret", "--model", "a", "--model", "b") as server:
        with pytest.raises(openai.AuthenticationError) as denied:
            ask(client(server, api_key="wrong"), "Hello", model="a")
        assert denied.value.code == "invalid_api_key"
        llm = client(server, api_key="secret")
        assert ask(llm, "Hello", model="b") == "I do not know."
        assert [model.id for model in llm.models.list()] == ["a", "b"]


def test_stats_count_requests_and_prompts(openai_server: ServerProcess) -> None:
    openai_server.reset_stats()
    llm = client(openai_server)
    ask(llm, "prompt A")
    ask(llm, "prompt A")
    ask(llm, "prompt B")
    with pytest.raises(openai.NotFoundError):
        ask(llm, "prompt A", model="other")
    stats = openai_server.stats()
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 3, "404": 1}
    assert stats["answered_ok"] == 3
    assert sorted(stats["prompts"].values()) == [1, 3]
    assert stats["peak_in_flight"] == 1
    assert stats["first_request_at"] <= stats["last_response_at"]

    stats = openai_server.reset_stats()
    assert stats["requests"] == 0
    assert stats["prompts"] == {}
    assert stats["first_request_at"] is None


def test_slots_bound_concurrency() -> None:
    async def ask_all(server: ServerProcess) -> list[str | None]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as llm:
            completions = await asyncio.gather(
                *(
                    llm.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": translation_prompt(article)}]
                    )
                    for article in ZULU[:6]
                )
            )
        return [completion.choices[0].message.content for completion in completions]

    with start_server("--slots", "2", "--latency", "0.2") as server:
        started = time.monotonic()
        assert asyncio.run(ask_all(server)) == ENGLISH[:6]
        elapsed = time.monotonic() - started
        stats = server.stats()
    assert elapsed >= 0.55  # 6 requests, 2 at a time, 0.2 s each: 3 rounds
    assert stats["peak_in_flight"] == 2
    assert stats["peak_queued"] >= 1
    assert stats["busy_slot_seconds"] >= 6 * 0.2 - 0.05


def test_sigterm_shuts_down_cleanly() -> None:
    with start_server() as server:
        assert ask(client(server), "Hello") == "I do not know."
        server.stop()
        assert server.returncode == 0
        assert "Traceback" not in server.stderr_text()
