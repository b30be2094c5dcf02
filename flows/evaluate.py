"""Prefect flow for `synth evaluate`: train a student on a published dataset's pairs and measure
the retrieval it gains. Its parameters are EvaluateConfig's fields (declared once, in
synth/config.py: the same as the command's options) plus `hub_token_secret`. The run leaves the
results table, the training progress, and logs; results.json and retrieval.png go to DATASET/eval.

    python flows/evaluate.py outputs/zu-en --eval udhr                                            # no server needed
    prefect deployment run 'evaluate/on-demand' --param dataset=outputs/zu-en --param 'eval=["udhr"]' --watch
"""

import sys
from pathlib import Path

# Run as a script or loaded by path (prefect.yaml's entrypoint): make `synth` and `flows` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.common import EvaluateRunOptions, declared_flow, run_evaluation  # noqa: E402
from synth.config import EvaluateConfig  # noqa: E402


@declared_flow("evaluate", EvaluateConfig, EvaluateRunOptions, description=(
    "Train a student on a dataset's pairs and measure the retrieval it gains on held-out bitext, beside the untouched "
    "student and a Procrustes map (synth evaluate)."
))
def evaluate(**parameters) -> dict:
    return run_evaluation(parameters)


if __name__ == "__main__":
    from synth.options import declared_config

    results = evaluate(**declared_config(EvaluateConfig, sys.argv[1:]).model_dump(mode="json"))
    print(f"results: {results['dataset']} -> eval/results.json")
