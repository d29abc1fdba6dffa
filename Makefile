# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv, installs the package (and ImageMagick's library for Wand when missing), then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test bench clean

setup: $(STAMP)
	@$(PY) -c "import wand.image" 2>/dev/null || sh scripts/install_imagemagick.sh
	@$(PY) -m jaxdenoise.native.onednn   # oneDNN's CPU convolutions, built once (XLA's are used where it cannot be)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: setup
	$(PY) scripts/demo.py --workdir runs/demo

test: setup
	$(PY) -m ruff check jaxdenoise scripts tests configs
	$(PY) -m pytest tests -n auto --dist loadfile --no-loadscope-reorder --durations=15   # one worker per core; a test file stays on one worker, the slowest files first (tests/conftest.py: SLOW_FIRST); the slowest tests listed

bench: setup
	$(PY) scripts/benchmark.py --config configs/paper.py

clean:
	rm -rf $(VENV) runs .pytest_cache
