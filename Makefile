# slamlib: two commands on a fresh machine with Python >= 3.11 and pip.
#   make book   build the HTML book on the embedded mock data  (PROFILE=smoke|quick|paper)
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
BIN := $(VENV)/bin

.PHONY: install test test-fast book clean-book benchmark

# One virtual environment; each target installs the extras it needs (pyproject.toml):
# test -> [test] (every layer), book -> [book], benchmarks -> [test] (they use the cluster too).
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.installed-%: pyproject.toml $(VENV)/.created
	$(BIN)/python -m pip install --quiet -e ".[$*]"
	touch $@

install: $(VENV)/.installed-test

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# The tests without the slow ones (under 2 minutes); CI runs them all.
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow"

book: $(VENV)/.installed-book
	$(BIN)/python -m slampaper.bookbuild --profile $(PROFILE)

benchmark: install
	$(BIN)/python benchmarks/run.py

# Prediction benchmark (batched vs reference vs original-code-style); trains and caches the model on first use
.PHONY: benchmark-predict
benchmark-predict: install
	$(BIN)/python benchmarks/prediction.py

# Peak memory of batched training at the Section 4 size (17,000 stars, 6 labels, 5x5 grid, 8 folds) on 2 pixels
.PHONY: benchmark-memory
benchmark-memory: install
	$(BIN)/python benchmarks/memory.py

# Training at the paper's Section 4 size (17,000 stars, 6 labels, 5x5 grid, 8 folds + refit), measured on a
# sample of pixels and projected to 1,901; BENCH_ARGS="--pixels 2 --reference" for a session-sized run
BENCH_ARGS ?=
.PHONY: benchmark-scale
benchmark-scale: install
	$(BIN)/python benchmarks/scale.py $(BENCH_ARGS)

# make book from a fresh clone of this commit with cold caches, timed (the book's 20-minute target)
.PHONY: benchmark-book
benchmark-book:
	$(PYTHON) benchmarks/book_build.py --profile $(PROFILE)

clean-book:
	rm -rf _build

# Parameter sweeps (sweeps.yml): make sweep SWEEP=name [PROFILE=quick] [WORKERS=2]
#   each grid point executes a chapter notebook; cached points are not executed again;
#   results in _build/sweeps/<name>/ (table .csv/.fits, plot .png), shown by the book's Sweeps chapter.
SWEEP ?=
WORKERS ?= 2
.PHONY: sweep
sweep: $(VENV)/.installed-book
	@if [ -z "$(SWEEP)" ]; then echo "usage: make sweep SWEEP=name [PROFILE=quick] [WORKERS=2]; declared sweeps:"; \
		$(BIN)/python -m slampaper.sweeps list; exit 2; fi
	$(BIN)/python -m slampaper.sweeps run $(SWEEP) --profile $(PROFILE) --workers $(WORKERS)

# The install stamps are real files that make must keep.
.SECONDARY:
