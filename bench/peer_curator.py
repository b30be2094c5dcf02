"""bespokelabs-curator 0.1.31 as a peer in bench/throughput.py (run with bench/.peers-venv/bin/python).

Configured as its documentation shows for an OpenAI-compatible endpoint: a `curator.LLM` subclass
(`prompt` gives the messages, `parse` the row), `backend="openai"` with `base_url` and `api_key`
in `backend_params`, the rate limits set to what the server takes (`max_concurrent_requests`,
and requests/tokens per minute far above what it can serve, so that they never bind), and
`require_all_responses=False` so that a run with failures still returns the rows it got. Reads
JSONL rows {"id", "messages"}, writes JSONL rows {"id", "translation"}.
"""

import argparse
import importlib.util
import json
import os
from pathlib import Path

# curator counts tokens with tiktoken's cl100k_base, which tiktoken downloads on first use; offline,
# use the copy litellm (a curator dependency) ships.
_litellm = Path(importlib.util.find_spec("litellm").submodule_search_locations[0])
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_litellm / "litellm_core_utils" / "tokenizers"))

from bespokelabs import curator  # noqa: E402


class Translator(curator.LLM):
    def prompt(self, input: dict) -> list[dict]:
        return input["messages"]

    def parse(self, input: dict, response: str) -> dict:
        return {"id": input["id"], "translation": response}


def main(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in open(args.input, encoding="utf-8")]
    translator = Translator(
        model_name=args.model,
        backend="openai",
        generation_params={"max_tokens": args.max_tokens, "temperature": 0.0},
        backend_params={
            "base_url": args.base_url, "api_key": "EMPTY",
            "max_concurrent_requests": args.concurrency,
            "max_requests_per_minute": 1_000_000, "max_tokens_per_minute": 1_000_000_000,
            "request_timeout": 120, "require_all_responses": False,
        },
    )
    result = translator(rows)
    with open(args.output, "w", encoding="utf-8") as out:
        for row in result.dataset:
            if row.get("translation") is not None:
                out.write(json.dumps({"id": row["id"], "translation": row["translation"]}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    main(parser.parse_args())
