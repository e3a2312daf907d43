# Two commands: `make run` and `make test`. Both set up .venv from scratch when needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test setup lint bench clean sentiment-model

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[ml,dev]'
	touch $(STAMP)

setup: $(STAMP)

var/catalog.csv: $(STAMP) data/sample/online_retail_sample.csv.gz
	$(BIN)/journeygate prepare --force

# A recommender model trained on the bundled sample, unless one exists already.
var/models/recommender/CURRENT: $(STAMP) data/sample/online_retail_sample.csv.gz
	$(BIN)/journeygate train

# The sentiment model, trained (evaluation skipped) when none exists, when it is of a format
# this version cannot read (a model from an older release is retrained, not refused at
# startup), or when its embeddings are of the MiniLM precision this machine runs slower.
sentiment-model: $(STAMP)
	$(BIN)/journeygate train-sentiment --no-evaluate --if-stale

run: setup var/catalog.csv var/models/recommender/CURRENT sentiment-model
	$(BIN)/journeygate serve

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest -q -p no:cacheprovider; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$status

bench: setup var/catalog.csv var/models/recommender/CURRENT
	$(BIN)/python bench/decide.py
	$(BIN)/python bench/encoder.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
