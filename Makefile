# prunecli: `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench sample clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## prune the bundled sample model on the bundled digits data, print the table
	mkdir -p build
	$(BIN)/prunecli prune sample_models/digits_cnn.h5 --config configs/quickstart.yaml --force

test: $(STAMP)  ## the whole suite, then ruff
	$(BIN)/python -m pytest -n 2 --dist loadfile
	$(BIN)/ruff check prunecli tests benchmarks sample_models

lint: $(STAMP)
	$(BIN)/ruff check prunecli tests benchmarks sample_models

bench: $(STAMP)  ## every benchmark: prints tables, writes benchmarks/results/*.json (structured.py alone ~23 min on 2 cores)
	$(BIN)/python benchmarks/finetune_overhead.py
	$(BIN)/python benchmarks/methods.py
	$(BIN)/python benchmarks/formats.py
	$(BIN)/python benchmarks/vs_tfmot.py
	$(BIN)/python benchmarks/big_model.py
	$(BIN)/python benchmarks/analyze.py --finetune
	$(BIN)/python benchmarks/taylor.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/keras2_families.py
	$(BIN)/python benchmarks/real_models.py
	$(BIN)/python benchmarks/structured.py
	$(BIN)/python benchmarks/latency_floor.py
	$(BIN)/python benchmarks/applications_channels.py --published

sample: $(STAMP)  ## rebuild sample_models/ from scikit-learn's bundled digits
	$(BIN)/python sample_models/make_sample.py

clean:
	rm -rf build .pytest_cache
