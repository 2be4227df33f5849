# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test clean

# torch and torchvision first and pinned, so that pip takes the local builds instead of
# resolving a newer CUDA wheel for fastai's unpinned requirement.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[demo,test]"
	touch $@

demo: $(VENV)/.installed
	bash scripts/demo.sh $(BIN)

test: $(VENV)/.installed
	$(BIN)/lint-imports --no-cache  # the layers (pyproject.toml): an upward import fails here, naming its line
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder  # two workers, a file each at a time, in tests/conftest.py's order

clean:
	rm -rf runs/demo-* .pytest_cache
