"""Prefect flow for back-translation: the same job and parameters as `synth backtranslate`, plus
the run options every flow takes (flows/common.py: shards of the corpus, a global concurrency limit,
the names of the Secret blocks holding the API key and the Hub token).

    python flows/backtranslate.py synth/data/udhr/zul.txt --lang zu --out outputs/zu-en   # no server needed
    prefect deployment run 'backtranslate/nightly' --param lang=zu --watch                 # as a deployment (prefect.yaml)
"""

import sys
from pathlib import Path

# Run as a script or loaded by path (prefect.yaml's entrypoint): make `synth` and `flows` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.common import RunOptions, declared_flow, main, run_job  # noqa: E402
from synth.backtranslate import BacktranslateJob  # noqa: E402
from synth.config import BacktranslateConfig  # noqa: E402


# The parameters are BacktranslateConfig's fields (declared once, in synth/config.py: the command's options
# too) and the run options of flows/common.py, each with its type, default and description.
@declared_flow("backtranslate", BacktranslateConfig, RunOptions, description="Back-translate a monolingual corpus into a training-ready dataset folder.")
def backtranslate(**parameters) -> dict:
    return run_job(BacktranslateJob, BacktranslateConfig, parameters)


if __name__ == "__main__":
    main(backtranslate, BacktranslateConfig, "pairs")
