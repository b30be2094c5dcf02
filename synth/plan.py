"""`--dry-run`: what a job would send, before it sends anything.

The corpus is read and segmented exactly as the job will (the same chunks, the same requests, the
same cache keys), the requests already answered in the generation cache are counted apart, and the
prompt tokens are counted with the model's tokenizer where it can be loaded offline (a local model
folder, the converted default model, a Hub model already in the local cache), else estimated:
UTF-8 bytes / 3 of each message plus 4 tokens a message (a little high for English with a modern
BPE tokenizer, about right for Latin-script African languages and for Ethiopic; see the README).
Completion tokens are estimated per task (`ChunkedJob.completion_estimate`: a translation about as
long as its source, a few short queries) and bounded by `--max-tokens` a request. Requests sent
after the filters (the back-translation round trip, the queries' relevance check) depend on the
filters' verdicts and are not counted: the plan says so.
"""

import json
import math
from dataclasses import asdict, dataclass, field

from synth.generate.cache import GenerationCache

BYTES_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


@dataclass
class Plan:
    task: str
    model: str | None
    records: int = 0
    chunks: int = 0
    requests: int = 0
    cached: int = 0                            # answered in the generation cache: not sent again
    prompt_tokens: int = 0                     # of the requests still to send
    completion_tokens: int = 0                 # estimated
    completion_tokens_max: int = 0             # at --max-tokens a request
    tokenizer: str = ""                        # how prompt tokens were counted
    cost_usd: float | None = None
    cost_usd_max: float | None = None
    not_counted: list[str] = field(default_factory=list)
    fingerprint: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """What `synth ... --dry-run` prints."""
        unit = "records" if self.requests == 0 and self.model is None else "segments"
        lines = [f"dry run of synth {self.task}: nothing was sent", f"  {unit:<18} {self.records:,} in {self.chunks:,} chunk{'s' * (self.chunks != 1)}"]
        if self.model is not None:
            to_send = self.requests - self.cached
            lines += [
                f"  {'requests':<18} {self.requests:,} to model {self.model} ({self.cached:,} answered in the cache, {to_send:,} to send)",
                f"  {'prompt tokens':<18} {self.prompt_tokens:,} ({self.tokenizer})",
                f"  {'completion tokens':<18} ~{self.completion_tokens:,} estimated, at most {self.completion_tokens_max:,} (--max-tokens a request)",
            ]
            if self.cost_usd is not None:
                lines.append(f"  {'cost':<18} ~${self.cost_usd:.4f} estimated, at most ${self.cost_usd_max:.4f} (at --price-input/--price-output)")
            else:
                lines.append(f"  {'cost':<18} give --price-input and --price-output (USD per million tokens) to see it")
            lines += [f"  not counted: {note}" for note in self.not_counted]
        lines.append(f"  {'job fingerprint':<18} {self.fingerprint}")
        return lines

    def markdown(self) -> str:
        """The same figures for the Prefect flow's first artifact."""
        rows = [("records", f"{self.records:,} in {self.chunks:,} chunks")]
        if self.model is not None:
            rows += [
                ("model", self.model),
                ("requests", f"{self.requests:,} ({self.cached:,} answered in the cache, {self.requests - self.cached:,} to send)"),
                ("prompt tokens", f"{self.prompt_tokens:,} ({self.tokenizer})"),
                ("completion tokens", f"~{self.completion_tokens:,} estimated, at most {self.completion_tokens_max:,}"),
                ("cost", f"~${self.cost_usd:.4f}, at most ${self.cost_usd_max:.4f}" if self.cost_usd is not None else "no --price-* given"),
            ]
        rows.append(("job fingerprint", f"`{self.fingerprint}`"))
        table = "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)
        notes = "".join(f"\n- not counted: {note}" for note in self.not_counted)
        return f"## Plan of this run (before any request)\n\n{table}\n{notes}"


def load_tokenizer(job):
    """(count(messages) -> int, description) with the model's tokenizer where it loads offline, else None."""
    from pathlib import Path

    config = job.config
    candidates = []
    if job.uses_server or config.backend == "vllm":
        candidates.append((config.model, {"local_files_only": True}))
    elif config.model is None:
        from synth.generate.backends import SMOLLM2_MODEL_NAME, synth_home

        converted = synth_home() / "models" / SMOLLM2_MODEL_NAME
        if (converted / "tokenizer_config.json").exists():
            candidates.append((str(converted), {"local_files_only": True}))
    elif Path(config.model).is_dir():
        candidates.append((config.model, {"local_files_only": True}))
    for source, kwargs in candidates:
        if not source:
            continue
        try:
            from transformers import AutoTokenizer
            from transformers.utils import logging as transformers_logging

            transformers_logging.set_verbosity_error()
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        except Exception:  # noqa: BLE001  (not in the local cache, not a model: the estimate)
            continue

        def count(messages, tokenizer=tokenizer) -> int:
            if getattr(tokenizer, "chat_template", None):
                encoded = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
                return len(encoded["input_ids"] if isinstance(encoded, dict) else encoded)
            return sum(len(tokenizer.encode(message["content"])) + TOKENS_PER_MESSAGE for message in messages)

        return count, f"the model's tokenizer, {Path(str(source)).name}"
    return None


def plan_job(job) -> Plan:
    """Read and segment the corpus as `job` will, and count what it would send (nothing is sent,
    nothing written)."""
    config = job.config
    plan = Plan(task=job.task, model=job.model_name if job.generates else None, fingerprint=job.fingerprint)
    tokenizer = load_tokenizer(job) if job.generates else None
    if tokenizer is not None:
        count, plan.tokenizer = tokenizer
    else:
        plan.tokenizer = f"estimated: UTF-8 bytes / {BYTES_PER_TOKEN} + {TOKENS_PER_MESSAGE} a message; no tokenizer of this model offline"

        def count(messages) -> int:
            return sum(estimate_tokens(message["content"]) + TOKENS_PER_MESSAGE for message in messages)

    cache = GenerationCache(config.cache_path) if job.generates and config.cache_path.exists() else None
    try:
        for chunk in job.chunks():
            plan.chunks += 1
            plan.records += len(chunk.segments)
            if not job.generates:
                continue
            planned = job.planned_requests(chunk)
            cached = cache.get_many([key for _, _, key in planned]) if cache is not None else {}
            for segment, request, key in planned:
                plan.requests += 1
                if key in cached:
                    plan.cached += 1
                    continue
                plan.prompt_tokens += count(request.messages)
                plan.completion_tokens += min(config.max_tokens, job.completion_estimate(segment, request))
                plan.completion_tokens_max += config.max_tokens
    finally:
        if cache is not None:
            cache.close()
    if job.generates:
        plan.cost_usd = config.cost_usd(plan.prompt_tokens, plan.completion_tokens)
        plan.cost_usd_max = config.cost_usd(plan.prompt_tokens, plan.completion_tokens_max)
        plan.not_counted = job.uncounted_requests()
    return plan


def plan_json(plan: Plan) -> str:
    return json.dumps({"event": "plan", **plan.as_dict()}, ensure_ascii=False)
