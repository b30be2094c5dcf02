"""Prefect flow that filters an existing parallel corpus: the same job and parameters as `synth
filter`, plus the run options every flow takes (flows/common.py). Nothing is generated: each chunk
task reads its pairs, filters them and stages the result; the publish, funnel and card artifacts
are those of the generation flows.

    python flows/filter.py corpus.zu corpus.en --src-lang zu --tgt-lang en --out outputs/zu-en-filtered   # no server needed
    prefect deployment run 'filter/DEPLOYMENT' --param src_lang=zu --watch                                  # as a deployment

Per-language values are mappings, e.g. `--param 'min_margin={"wo": 0.5}'` (the other languages keep
the default) or `lid_detector={"zu": "py3langid"}`.
"""

import sys
from pathlib import Path

# Run as a script or loaded by path (prefect.yaml's entrypoint): make `synth` and `flows` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.common import FilterRunOptions, declared_flow, main, run_job  # noqa: E402
from synth.filter_job import FilterJob  # noqa: E402
from synth.config import FilterConfig  # noqa: E402


# The parameters are FilterConfig's fields (declared once, in synth/config.py: the command's options
# too) and the run options of flows/common.py, each with its type, default and description.
@declared_flow("filter", FilterConfig, FilterRunOptions, description="Filter an existing parallel corpus into a dataset folder (kept pairs, rejects, funnel, card).")
def filter_pairs(**parameters) -> dict:
    return run_job(FilterJob, FilterConfig, parameters)


if __name__ == "__main__":
    main(filter_pairs, FilterConfig, "pairs")
