# `make test` is the project's test command: it creates .venv on first use, installs the pinned
# requirements and the project (editable), and headless Chromium where it can (`make browser`), then
# runs pytest. Extra pytest arguments: PYTEST_ARGS.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install browser test bench demo clean

$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

install: $(BIN)/.installed

# Headless Chromium for tests/viz/test_browser.py (Debian packages, as root); where it cannot be installed,
# the script says why and that test skips.
browser:
	bash scripts/install_browser.sh

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The main job on an embedded default: synthetic multi-view data -> raycond2 trained on the CPU ->
# yaw-sweep grid, orbit video and pose error (scripts/demo.sh; about 12 minutes on two cores).
demo: install
	PYTHON=$(BIN)/python scripts/demo.sh

bench: install
	$(BIN)/python bench/ops_cpu.py
	$(BIN)/python bench/generator_cpu.py
	$(BIN)/python bench/train_cpu.py
	$(BIN)/python bench/creps_cpu.py
	$(BIN)/python bench/triplane_cpu.py
	$(BIN)/python bench/gram_cpu.py
	$(BIN)/python bench/epigraf_cpu.py
	$(BIN)/python bench/viz_latency.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
