PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench lint clean

# pyproject.toml declares ranges; constraints.txt pins the exact versions the project is tested with
# (torch and torchvision included), so pip never considers another torch build here.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ssl-bench run --algo mean_teacher --dataset digits --labels 50 --seed 0 --overwrite

# Fast unit tests first, so a broken building block fails in seconds; then the end-to-end runs.
test: $(STAMP)
	$(BIN)/python -m pytest tests -m "not e2e"
	$(BIN)/python -m pytest tests -m e2e

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py --quick

lint: $(STAMP)
	$(BIN)/ruff check ssl_toolkit algorithms tests benchmarks

clean:
	rm -rf $(VENV) runs
