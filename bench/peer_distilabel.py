"""distilabel 1.5.3 as a peer in bench/throughput.py (run with bench/.peers-venv/bin/python).

Configured as its documentation shows for an OpenAI-compatible endpoint: a `Pipeline` of
`LoadDataFromDicts` >> `TextGeneration(llm=OpenAILLM(base_url=...))`, the task's
`input_batch_size` set to the number of requests to keep in flight (an `AsyncLLM` sends a batch's
requests concurrently), the LLM's own retries (`max_retries`, the openai client's backoff).
Reads JSONL rows {"id", "messages": [system, user]}, writes JSONL rows {"id", "translation"};
a row whose generation failed (distilabel records None) writes nothing.
"""

import argparse
import json
import tempfile

from distilabel.models.llms import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts
from distilabel.steps.tasks import TextGeneration


def main(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in open(args.input, encoding="utf-8")]
    system = rows[0]["messages"][0]["content"]
    assert all(row["messages"][0]["content"] == system for row in rows), "one system prompt for every row"
    data = [{"id": row["id"], "instruction": row["messages"][1]["content"]} for row in rows]
    with Pipeline(name="synth-bench", cache_dir=tempfile.mkdtemp(prefix="distilabel-")) as pipeline:
        load = LoadDataFromDicts(data=data, batch_size=args.concurrency)
        generate = TextGeneration(
            llm=OpenAILLM(
                model=args.model, base_url=args.base_url, api_key="EMPTY", max_retries=args.max_retries, timeout=120,
                generation_kwargs={"max_new_tokens": args.max_tokens, "temperature": 0.0},
            ),
            system_prompt=system,
            input_batch_size=args.concurrency,
        )
        load >> generate
    distiset = pipeline.run(use_cache=False)
    with open(args.output, "w", encoding="utf-8") as out:
        for row in distiset["default"]["train"]:
            if row.get("generation") is not None:
                out.write(json.dumps({"id": row["id"], "translation": row["generation"]}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--max-retries", type=int, default=6)
    main(parser.parse_args())
