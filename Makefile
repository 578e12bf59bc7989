# Two commands: `make book` and `make test`. Everything else is a helper target.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= cpu
# pytest-xdist workers (auto: one per physical core); each test process uses one thread
JOBS ?= auto
export IMALIB_DATA_ROOT ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
export PYTHONHASHSEED := 0
# `make ... NO_INSTALL=1` uses .venv as it is and never runs pip (for a shared or hand-made virtualenv)
INSTALLED := $(if $(NO_INSTALL),,$(STAMP))

.PHONY: book test venv notebooks html bench lint links browser publish gpu-check

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

# Run every notebook at the default profile (cache-aware: finished runs are loaded), then build.
notebooks: $(INSTALLED)
	$(PY) -m imalib.book --profile $(PROFILE) $(NOTEBOOK_FLAGS)

# A full build (--all): an incremental one exits 0 on warnings of pages it did not rebuild.
html: $(INSTALLED)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going --all

book: notebooks html

# ruff (lint and format check) and mypy over imalib/, configured in pyproject.toml.
lint: $(INSTALLED)
	$(VENV)/bin/ruff check imalib
	$(VENV)/bin/ruff format --check imalib
	$(VENV)/bin/mypy

# Every link, anchor and image of the built book, offline (external links are listed in _build/external-links.txt).
links: $(INSTALLED)
	IMALIB_REQUIRE_BOOK=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_links.py

# The browser check needs a Chromium: installed here with apt when running as root, else skipped with a loud
# line (tests/test_book_render.py says how to enable it). In CI (CI=true) it always runs, and fails without one.
BROWSERS ?= chromium chromium-browser google-chrome google-chrome-stable
browser:
	@found=$${IMALIB_CHROMIUM:-}; for b in $(BROWSERS); do command -v $$b >/dev/null 2>&1 && found=$$b; done; \
	if [ -z "$$found" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium with apt-get for the browser check"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "*** apt-get could not install chromium: the browser check will be SKIPPED (CI fails) ***"; \
	  else \
	    echo "*** NO CHROMIUM and not root: the browser check of the book will be SKIPPED. Enable it with"; \
	    echo "*** 'sudo apt-get install chromium' or IMALIB_CHROMIUM=/path/to/chromium (CI fails without it) ***"; \
	  fi; \
	fi

# The tests (smoke runs of every notebook included, JOBS in parallel), then the book from the committed records
# only (no training, warnings are errors), then the rendered pages in headless Chromium, the links, lint and types.
test: $(INSTALLED) browser
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -rfEs -n $(JOBS) --durations=15 tests --ignore=tests/test_book_render.py --ignore=tests/test_links.py \
		--ignore=tests/test_widgets_render.py
	$(MAKE) notebooks html NOTEBOOK_FLAGS=--no-train
	IMALIB_REQUIRE_BOOK=1 $(PY) -m pytest -q -rfEs -p no:cacheprovider tests/test_book_render.py tests/test_links.py \
		tests/test_widgets_render.py
	$(MAKE) lint

# _build/html from the committed records, ready for any static host (GitHub Pages: .nojekyll keeps _static/).
publish: $(INSTALLED)
	$(MAKE) notebooks html NOTEBOOK_FLAGS=--no-train
	touch _build/html/.nojekyll
	$(MAKE) links
	@echo "_build/html is ready to publish: copy it to any static web host"

bench: $(INSTALLED)
	cd benchmarks && ../$(PY) ima_epoch.py && ../$(PY) evaluator.py && ../$(PY) moons_protocol.py

# On a CUDA machine: every method on every dataset for two batches and an evaluation, then paper-profile
# Fashion-MNIST epochs for adv and IMA; writes benchmarks/results/gpu_check.json. Without CUDA it says so, exit 0.
gpu-check: $(INSTALLED)
	$(PY) benchmarks/gpu_check.py
