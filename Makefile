PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench lint clean

# torch/torchvision are pinned in pyproject.toml; installing them first keeps pip's resolver
# from ever considering another torch build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ssl-bench run --algo mean_teacher --dataset digits --labels 50 --seed 0 --overwrite

# Fast unit tests first, so a broken building block fails in seconds; then the end-to-end runs.
test: $(STAMP)
	$(BIN)/python -m pytest tests -m "not e2e"
	$(BIN)/python -m pytest tests -m e2e

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

lint: $(STAMP)
	$(BIN)/ruff check ssl_toolkit algorithms tests benchmarks

clean:
	rm -rf $(VENV) runs
