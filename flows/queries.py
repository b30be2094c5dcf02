"""Prefect flow for synthetic search queries: the same job and parameters as `synth queries`, plus
the run options every flow takes (flows/common.py: shards of the corpus, a global concurrency limit,
the names of the Secret blocks holding the API key and the Hub token).

    python flows/queries.py synth/data/udhr/swh.txt --lang sw --query-lang en --out outputs/sw-queries   # no server needed
    prefect deployment run 'queries/DEPLOYMENT' --param lang=sw --watch                                 # as a deployment
"""

import sys
from pathlib import Path

# Run as a script or loaded by path (prefect.yaml's entrypoint): make `synth` and `flows` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.common import RunOptions, declared_flow, main, run_job  # noqa: E402
from synth.queries import QueriesJob  # noqa: E402
from synth.config import QueriesConfig  # noqa: E402


# The parameters are QueriesConfig's fields (declared once, in synth/config.py: the command's options
# too) and the run options of flows/common.py, each with its type, default and description.
@declared_flow("queries", QueriesConfig, RunOptions, description="Write search queries for the passages of a corpus: a (query, passage) dataset folder.")
def queries(**parameters) -> dict:
    return run_job(QueriesJob, QueriesConfig, parameters)


if __name__ == "__main__":
    main(queries, QueriesConfig, "queries")
