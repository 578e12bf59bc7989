# Two commands: `make book` and `make test`. Everything else is a helper target.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= cpu
export IMALIB_DATA_ROOT ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
export PYTHONHASHSEED := 0

.PHONY: book test venv notebooks html bench

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

# Run every notebook at the default profile (cache-aware: finished runs are loaded), then build.
notebooks: $(STAMP)
	$(PY) -m imalib.book --profile $(PROFILE) $(NOTEBOOK_FLAGS)

html: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

book: notebooks html

# The tests (smoke runs of every notebook included), then the book from the committed records only
# (no training), then the rendered pages checked in headless Chromium.
test: $(STAMP)
	$(PY) -m pytest -q tests
	$(MAKE) notebooks html NOTEBOOK_FLAGS=--no-train
	IMALIB_REQUIRE_BOOK=1 $(PY) -m pytest -q tests/test_book_render.py

bench: $(STAMP)
	cd benchmarks && ../$(PY) ima_epoch.py && ../$(PY) evaluator.py && ../$(PY) moons_protocol.py
