"""The baseline of bench/throughput.py: a plain hand-written driver of an OpenAI-compatible server.

What most people would write first: asyncio, the openai client on its aiohttp transport (with the
client's own retries: exponential backoff that honours Retry-After), a semaphore of `--concurrency`
requests, every input sent at once. It reads JSONL rows {"id", "messages"} and writes JSONL rows
{"id", "translation"}; a request that still fails after the client's retries writes nothing.

    python bench/minimal_driver.py --base-url URL --model M --input in.jsonl --output out.jsonl
"""

import argparse
import asyncio
import json

import openai


async def main(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in open(args.input, encoding="utf-8")]
    client = openai.AsyncOpenAI(
        base_url=args.base_url, api_key="EMPTY", max_retries=args.max_retries, timeout=args.timeout,
        http_client=openai.DefaultAioHttpClient(timeout=args.timeout),
    )
    slots = asyncio.Semaphore(args.concurrency)

    async def translate(row: dict) -> dict | None:
        async with slots:
            try:
                response = await client.chat.completions.create(
                    model=args.model, messages=row["messages"], max_tokens=args.max_tokens, temperature=0
                )
            except (openai.OpenAIError, ValueError):  # ValueError: a body that is not JSON
                return None
        return {"id": row["id"], "translation": response.choices[0].message.content}

    results = await asyncio.gather(*(translate(row) for row in rows))
    await client.close()
    with open(args.output, "w", encoding="utf-8") as out:
        for result in results:
            if result is not None:
                out.write(json.dumps(result, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--max-retries", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    asyncio.run(main(parser.parse_args()))
