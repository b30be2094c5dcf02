"""The OpenAI Batch API for the test server, answered by the same oracle as its chat completions.

Routes (added to `synth.testing.openai_server`'s app): POST /v1/files (multipart upload), GET
/v1/files/{id}, GET /v1/files/{id}/content, POST /v1/batches, GET /v1/batches, GET
/v1/batches/{id}. A batch goes validating -> in_progress -> finalizing -> completed while a
background task answers its lines, spending the server's `--latency` in each of the first three
states (so a client can be seen polling a running batch).

Also a stand-in for vLLM's offline batch runner, with the same command line:

    python -m synth.testing.batch_api -i requests.jsonl -o results.jsonl [--model udhr-oracle]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from synth.testing.openai_server import DEFAULT_MODEL, FakeOpenAI, error_response

CHAT_ENDPOINT = "/v1/chat/completions"


def answer_line(handlers: FakeOpenAI, line: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The result line for one request line, and whether it succeeded."""
    custom_id = line.get("custom_id")
    body = line.get("body") or {}
    request_id = f"req_{uuid.uuid4().hex}"
    if line.get("url") != CHAT_ENDPOINT or not isinstance(body.get("messages"), list):
        status, answer = 400, {"error": {"message": f"only {CHAT_ENDPOINT} with messages is supported", "type": "invalid_request_error"}}
    elif body.get("model") not in handlers.models:
        status, answer = 404, {"error": {"message": f"The model `{body.get('model')}` does not exist.", "type": "invalid_request_error", "code": "model_not_found"}}
    else:
        status, answer = 200, handlers._completion(body["model"], body["messages"], handlers._answer(body["messages"]))
    result = {
        "id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": answer}, "error": None,
    }
    return result, status == 200


def answer_lines(handlers: FakeOpenAI, text: str) -> tuple[list[str], list[str]]:
    """(output lines, error lines) for a JSONL of request lines."""
    output, errors = [], []
    for raw in text.splitlines():
        if raw.strip():
            result, ok = answer_line(handlers, json.loads(raw))
            (output if ok else errors).append(json.dumps(result, ensure_ascii=False) + "\n")
    return output, errors


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "file", "bytes": len(self.content), "created_at": self.created_at,
            "filename": self.filename, "purpose": self.purpose, "status": "processed",
        }


class BatchApi:
    def __init__(self, handlers: FakeOpenAI) -> None:
        self.handlers = handlers
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.create_file)
        app.router.add_get("/v1/files/{id}", self.get_file)
        app.router.add_get("/v1/files/{id}/content", self.get_file_content)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{id}", self.get_batch)

    def _store(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, content)
        self.files[stored.id] = stored
        return stored

    def _not_found(self, what: str, id_: str) -> web.Response:
        return error_response(404, f"No such {what}: {id_}", "invalid_request_error")

    async def create_file(self, request: web.Request) -> web.Response:
        if denied := self.handlers._unauthorized(request):
            return denied
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return error_response(400, "`file` must be an uploaded file.", "invalid_request_error")
        stored = self._store(upload.filename, str(form.get("purpose", "")), upload.file.read())
        return web.json_response(stored.as_json())

    async def get_file(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["id"])
        return web.json_response(stored.as_json()) if stored else self._not_found("file", request.match_info["id"])

    async def get_file_content(self, request: web.Request) -> web.Response:
        if denied := self.handlers._unauthorized(request):
            return denied
        stored = self.files.get(request.match_info["id"])
        if stored is None:
            return self._not_found("file", request.match_info["id"])
        return web.Response(body=stored.content, content_type="application/octet-stream")

    async def create_batch(self, request: web.Request) -> web.Response:
        if denied := self.handlers._unauthorized(request):
            return denied
        body = await request.json()
        input_file = self.files.get(body.get("input_file_id", ""))
        if input_file is None:
            return self._not_found("file", body.get("input_file_id", ""))
        now = int(time.time())
        batch = {
            "id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": body.get("endpoint", CHAT_ENDPOINT),
            "errors": None, "input_file_id": input_file.id, "completion_window": body.get("completion_window", "24h"),
            "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
            "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        self.batches[batch["id"]] = batch
        task = asyncio.ensure_future(self._run(batch, input_file))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(batch)

    async def _run(self, batch: dict[str, Any], input_file: StoredFile) -> None:
        await asyncio.sleep(self.handlers.latency)
        batch.update(status="in_progress", in_progress_at=int(time.time()))
        output, errors = answer_lines(self.handlers, input_file.content.decode("utf-8"))
        batch["request_counts"] = {"total": len(output) + len(errors), "completed": len(output), "failed": len(errors)}
        await asyncio.sleep(self.handlers.latency)
        batch.update(status="finalizing", finalizing_at=int(time.time()))
        await asyncio.sleep(self.handlers.latency)
        if output:
            batch["output_file_id"] = self._store(f"{batch['id']}_output.jsonl", "batch_output", "".join(output).encode()).id
        if errors:
            batch["error_file_id"] = self._store(f"{batch['id']}_error.jsonl", "batch_output", "".join(errors).encode()).id
        batch.update(status="completed", completed_at=int(time.time()))

    async def list_batches(self, request: web.Request) -> web.Response:
        if denied := self.handlers._unauthorized(request):
            return denied
        data = list(self.batches.values())
        return web.json_response({"object": "list", "data": data, "first_id": None, "last_id": None, "has_more": False})

    async def get_batch(self, request: web.Request) -> web.Response:
        if denied := self.handlers._unauthorized(request):
            return denied
        batch = self.batches.get(request.match_info["id"])
        return web.json_response(batch) if batch else self._not_found("batch", request.match_info["id"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m synth.testing.batch_api", description="Answer a Batch API JSONL offline, like vLLM's run_batch.")
    parser.add_argument("-i", "--input-file", type=Path, required=True)
    parser.add_argument("-o", "--output-file", type=Path, required=True)
    parser.add_argument("--model", action="append", dest="models", metavar="NAME", help=f"a served model name (default: {DEFAULT_MODEL})")
    args = parser.parse_args(argv)
    output, errors = answer_lines(FakeOpenAI(models=args.models or [DEFAULT_MODEL]), args.input_file.read_text(encoding="utf-8"))
    # As vLLM's run_batch: one output file, failed requests included with their status code.
    args.output_file.write_text("".join(output + errors), encoding="utf-8")


if __name__ == "__main__":
    main()
