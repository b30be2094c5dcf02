"""Batch files: a job's pending requests out as OpenAI Batch API JSONL, the answers back into the
generation cache, so the job then finishes without sending a request.

    export_requests(job, cache, folder)   -> requests-00000.jsonl, ... (each line: custom_id = cache key)
    import_results(paths, cache)           <- the result JSONL of the OpenAI Batch API or `vllm run_batch`
    submit_batches / refresh_batches       drive the OpenAI Batch API with the `openai` client

The same lines go to the OpenAI Batch API (half price, answers within 24 h) and to vLLM's
`python -m vllm.entrypoints.openai.run_batch -i requests-00000.jsonl -o results.jsonl --model M`
on a cluster. Submitted batches are recorded in OUT/.synth/batches.json as soon as they are
created, so a `synth batch status` after a crash or days later finds them by id, and submitting
the same requests again reuses the batch instead of paying twice.
"""

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from synth.generate.backends import Completion
from synth.generate.cache import GenerationCache
from synth.atomic import atomic_path, atomic_write_json

ENDPOINT = "/v1/chat/completions"
# OpenAI takes at most 50,000 requests per batch file.
REQUESTS_PER_FILE = 50_000
REQUEST_FILES = "requests-*.jsonl"
# A batch in one of these states produces nothing more.
ENDED = ("completed", "failed", "expired", "cancelled")
UNUSABLE = ("failed", "expired", "cancelled")


def request_line(key: str, model: str, messages: list[dict], params: dict) -> dict:
    return {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": {"model": model, "messages": messages, **params}}


def export_requests(job, cache: GenerationCache, folder: Path, requests_per_file: int = REQUESTS_PER_FILE) -> list[Path]:
    """Writes the job's pending requests (each once) to folder/requests-NNNNN.jsonl and returns the
    files; files of an earlier export are replaced. No file when nothing is pending."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(REQUEST_FILES):
        stale.unlink()
    params = job.config.generation_params
    written: list[Path] = []
    seen: set[str] = set()
    lines: list[str] = []

    def flush() -> None:
        path = folder / f"requests-{len(written):05d}.jsonl"
        with atomic_path(path) as temp:
            temp.write_text("".join(lines), encoding="utf-8")
        written.append(path)
        lines.clear()

    for key, messages in job.pending_requests(cache):
        if key in seen:  # custom_id must be unique within a batch
            continue
        seen.add(key)
        lines.append(json.dumps(request_line(key, job.model_name, messages, params), ensure_ascii=False) + "\n")
        if len(lines) == requests_per_file:
            flush()
    if lines:
        flush()
    return written


@dataclass
class ImportStats:
    imported: int = 0   # answers now in the cache
    failed: int = 0     # lines with an error or no usable answer: still pending, the job sends them


def _completion(body: dict) -> Completion | None:
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(text, str) or not text.strip():
        return None
    usage = body.get("usage") or {}
    return Completion(text, usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, choice.get("finish_reason"))


def import_results(paths: Iterable[Path], cache: GenerationCache) -> ImportStats:
    """Feeds Batch API result lines into the cache under their custom_id (the cache key)."""
    stats = ImportStats()
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    result = json.loads(line)
                    key = result["custom_id"]
                except (ValueError, KeyError, TypeError) as error:
                    raise ValueError(f"{path}:{number}: not a Batch API result line ({error})") from None
                response = result.get("response") or {}
                body = response.get("body") or {}
                completion = _completion(body) if response.get("status_code") == 200 else None
                if completion is None:
                    stats.failed += 1
                    continue
                # The cache holds an answer as the fields of its Completion, as the runner writes it.
                cache.put(key, body.get("model") or "", asdict(completion))
                stats.imported += 1
    return stats


# --- the OpenAI Batch API ------------------------------------------------------------------------

@dataclass
class BatchRecord:
    batch_id: str
    requests_file: str
    requests_sha256: str
    input_file_id: str
    base_url: str
    cache_path: str
    status: str = "validating"
    request_counts: dict = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    imported: bool = False   # its results are in the cache
    submitted_at: float = field(default_factory=time.time)


def batches_path(work_dir: Path) -> Path:
    return work_dir / "batches.json"


def load_records(work_dir: Path) -> list[BatchRecord]:
    path = batches_path(work_dir)
    if not path.exists():
        return []
    return [BatchRecord(**record) for record in json.loads(path.read_text(encoding="utf-8"))]


def save_records(work_dir: Path, records: list[BatchRecord]) -> None:
    atomic_write_json(batches_path(work_dir), [asdict(record) for record in records])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def submit_batches(client, work_dir: Path, request_files: list[Path], cache_path: Path) -> list[tuple[BatchRecord, bool]]:
    """Uploads each requests file and creates its batch, unless a batch for the same content is
    already running or done. Returns (record, created now) per file."""
    records = load_records(work_dir)
    base_url = str(client.base_url)
    submitted = []
    for path in request_files:
        digest = _sha256(path)
        earlier = [r for r in records if r.requests_sha256 == digest and r.base_url == base_url and r.status not in UNUSABLE]
        if earlier:
            submitted.append((earlier[-1], False))
            continue
        with open(path, "rb") as content:
            upload = client.files.create(file=(path.name, content), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h",
            metadata={"synth_requests": path.name, "synth_sha256": digest[:16]},
        )
        record = BatchRecord(
            batch_id=batch.id, requests_file=str(path), requests_sha256=digest, input_file_id=upload.id,
            base_url=base_url, cache_path=str(cache_path), status=batch.status,
        )
        records.append(record)
        save_records(work_dir, records)  # at once: the batch is paid for, its id must not be lost
        submitted.append((record, True))
    return submitted


def refresh_batches(client_for, work_dir: Path) -> tuple[list[BatchRecord], ImportStats]:
    """Checks every batch not yet imported; the results of an ended one (a partial output of an
    expired batch too) go into the cache. `client_for(base_url)` gives an `openai.OpenAI`."""
    records = load_records(work_dir)
    stats = ImportStats()
    for record in records:
        if record.imported:
            continue
        client = client_for(record.base_url)
        batch = client.batches.retrieve(record.batch_id)
        record.status = batch.status
        record.request_counts = batch.request_counts.model_dump() if batch.request_counts else {}
        record.output_file_id, record.error_file_id = batch.output_file_id, batch.error_file_id
        if batch.status in ENDED:
            results = work_dir / "batch" / f"results-{record.batch_id}.jsonl"
            results.parent.mkdir(parents=True, exist_ok=True)
            files = []
            for file_id, path in ((batch.output_file_id, results), (batch.error_file_id, results.with_name(f"errors-{record.batch_id}.jsonl"))):
                if file_id:
                    with atomic_path(path) as temp:
                        client.files.content(file_id).write_to_file(temp)
                    files.append(path)
            cache = GenerationCache(record.cache_path)
            try:
                part = import_results(files, cache)
            finally:
                cache.close()
            stats.imported += part.imported
            stats.failed += part.failed
            record.imported = True
        save_records(work_dir, records)
    return records, stats
