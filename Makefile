# slamlib: two commands on a fresh machine with Python >= 3.11 and pip.
#   make book   build the HTML book on the embedded mock data  (PROFILE=smoke|quick|paper)
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
BIN := $(VENV)/bin

.PHONY: install test book clean-book benchmark

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest

book: install
	$(BIN)/python -m slamlib.bookbuild --profile $(PROFILE)

benchmark: install
	$(BIN)/python benchmarks/run.py

clean-book:
	rm -rf _build
