"""stats.json: a dataset's figures, summed from the records of its staged chunks (synth.staging).

The funnel (rows in, out and dropped per reason at every step, from the read to the last
follow-up stage), the generation's requests, tokens and cost, each filter's own time, the embedding
step's decisions and the high-reject warnings. Everything comes from what each chunk recorded when
it was staged, so publishing the same chunks again gives the same figures (the same bytes); what
this run itself did (times, requests sent) goes to `run`, kept out of the published file.
"""

import time
from collections import Counter
from datetime import datetime, timezone

from synth.filters.base import FilterStats
from synth.filters.report import embedding_decisions, reject_warnings
from synth.generate.runner import GenerationStats
from synth.staging import ChunkResult

GENERATE_STEP = "generate"


def dataset_stats(
    results: list[ChunkResult], *, config, read: dict, lid_detectors: dict, generates: bool, started: float
) -> dict:
    """stats.json's content plus "run" (what this run did). `config`: the job's settings (its
    language, prices and filter cuts); `read`: the reader's counts (ReadStats.as_dict());
    `lid_detectors`: lang -> the detector that checked it; `generates`: False for a job that
    generates nothing (no generation step, no cost)."""
    lang = config.lang
    generation, this_run = GenerationStats(), GenerationStats()
    for result in results:
        generation.merge(GenerationStats.from_dict(result.generation))
        if not result.reused:
            this_run.merge(GenerationStats.from_dict(result.generation))
    steps = _filter_steps(results)
    read_dropped = {
        kind: read[key] for kind, key in
        (("empty", "empty_dropped"), ("duplicate", "duplicates_dropped"), ("too_long", "too_long_dropped"))
        if read.get(key)
    }
    funnel = [{"step": "read", "in": read["lines_read"], "out": read["segments"], "dropped": read_dropped}]
    for name, step in steps.items():
        funnel.append({
            "step": name, "in": step.rows_in.get(lang, 0), "out": step.rows_out.get(lang, 0),
            "dropped": dict(step.reasons.get(lang, {})),
            **({"derived": step.derived_summary()} if step.derived else {}),
        })
    unverified = Counter()
    for result in results:
        unverified.update(result.lid_unverified)
    finished = time.time()
    cost = config.cost_usd(generation.prompt_tokens, generation.completion_tokens) if generates else None
    stages = _followup_stages(results, config)
    run_cost = config.cost_usd(this_run.spent_prompt_tokens, this_run.spent_completion_tokens) if generates else None
    return {
        "read": read,
        "generation": {
            **generation.as_dict(), **({"cost_usd": cost} if cost is not None else {}), **({"stages": stages} if stages else {}),
        },
        "funnel": {lang: funnel},
        # Said out loud (synth.filters.report): a language that lost more than a quarter of its
        # pairs, and what the embedding step decided on.
        "warnings": {"high_reject_rate": reject_warnings({lang: funnel})},
        "embedding": embedding_decisions({lang: funnel}, config),
        "lid": {"unverified": dict(unverified), "detectors": lid_detectors},
        # Each filter's own time (FilterChain times every block), summed over the dataset's chunks
        # as each was filtered and recorded when it was staged: publishing the same staged chunks
        # again gives the same figures, so the same bytes (no new Hub commit).
        "filter_seconds": {
            name: round(step.seconds, 3) for name, step in steps.items() if name != GENERATE_STEP and name not in stages
        },
        "run": {
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
            "finished": datetime.fromtimestamp(finished, timezone.utc).isoformat(),
            "seconds": round(finished - started, 2),
            "chunks": len(results),
            "chunks_reused": sum(result.reused for result in results),
            # What this run itself sent; "generation" above covers every chunk of the dataset.
            "requests": this_run.requests,
            "cache_hits": this_run.cache_hits,
            "prompt_tokens": this_run.spent_prompt_tokens,
            "completion_tokens": this_run.spent_completion_tokens,
            **({"cost_usd": run_cost} if run_cost is not None else {}),
        },
    }


def _filter_steps(results: list[ChunkResult]) -> dict[str, FilterStats]:
    """Every step's counts (generation, filters, follow-up stages), summed over the chunks, in order."""
    steps: dict[str, FilterStats] = {}
    for result in results:
        for name, data in result.filters.items():
            part = FilterStats(Counter(data["in"]), Counter(data["out"]))
            for language, reasons in data["dropped"].items():
                part.reasons[language].update(reasons)
            for threshold, values in data.get("derived", {}).items():
                part.derived[threshold].extend(values)
            part.seconds = data.get("seconds", 0.0)  # chunks staged by an older synth have none
            steps.setdefault(name, FilterStats()).merge(part)
    return steps


def _followup_stages(results: list[ChunkResult], config) -> dict[str, dict]:
    """Follow-up stages (synth.job.FollowupStage): what each asked and heard, and its share of the generation."""
    stages: dict[str, dict] = {}
    for result in results:
        for name, data in result.stages.items():
            total = stages.setdefault(name, {"generation": GenerationStats()})
            total["generation"].merge(GenerationStats.from_dict(data.get("generation", {})))
            for key, value in data.items():
                if key != "generation":
                    total[key] = total.get(key, 0) + value
    for name, total in stages.items():
        spent = total.pop("generation")
        stage_cost = config.cost_usd(spent.prompt_tokens, spent.completion_tokens)
        stages[name] = {
            **total, "requests": spent.requests, "cache_hits": spent.cache_hits, "failed": spent.failed,
            "prompt_tokens": spent.prompt_tokens, "completion_tokens": spent.completion_tokens,
            **({"cost_usd": stage_cost} if stage_cost is not None else {}),
        }
    return stages
