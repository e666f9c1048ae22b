# Two entry points for a fresh machine: `make demo` and `make test` (each creates .venv on first use).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO := demo

.PHONY: demo test test-fast lint bench constraints clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0 -e '.[dev]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/edgeseg export --model afformer-tiny --input-size 512x512 --target onnxruntime --out $(DEMO)/afformer-tiny-onnxruntime --force
	$(BIN)/edgeseg export --model afformer-tiny --input-size 512x512 --target openvino --out $(DEMO)/afformer-tiny-openvino --force
	$(BIN)/edgeseg bench $(DEMO)/afformer-tiny-onnxruntime $(DEMO)/afformer-tiny-openvino --threads 1 2 --iters 30

test: $(INSTALLED)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy edgeseg
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (exports of real models, benchmarks): a few minutes.
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(INSTALLED)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy edgeseg

# Pin the versions of the current environment (after an upgrade whose tests pass).
constraints: $(INSTALLED)
	{ sed -n 1,2p constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.new
	mv constraints.new constraints.txt

bench: $(INSTALLED)
	$(BIN)/python benchmarks/run.py table --models afformer-tiny

clean:
	rm -rf $(VENV) $(DEMO)
