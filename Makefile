# GeoReasoner: every target sets up what it needs (apt, venvs, pip) and is idempotent.
#   make demo                 ask the NAIP sample a question (published weights, or tiny models)
#   make demo MODELS=tiny     the whole chain on tiny random models (meaningless answer)
#   make lint                 ruff check + mypy --strict on core/ (seconds); make test runs it first
#   make test                 the whole test suite
#   make bench                CPU tables with their targets, and the regression check against bench/baseline.json
#   make bench-gpu            the models at real size (random weights, bf16) on a CUDA GPU: table + out/bench-gpu.json
#   make plugin-zip           dist/georeasoner_plugin-<version>.zip for QGIS
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
BACKEND_VENV ?= .venv-backend
BACKEND_PY := $(BACKEND_VENV)/bin/python
STAMP := $(BACKEND_VENV)/.georeasoner-installed
TORCH_PINS := $(shell $(PYTHON) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["georeasoner"]["torch"]))')

SHARED_DATA ?= ../shared/data
IMAGE ?= $(SHARED_DATA)/naip_nd_2020.tif
QUESTION ?= Which lakes could supply irrigation water to the fields around them?
PROFILE ?= remotereasoner
MODELS ?= published
OUT ?= out/demo.gpkg
TINY_DIR ?= .cache/tiny-models
PYTEST_ARGS ?=
export GEOREASONER_REASONER GEOREASONER_SEGMENTER

.PHONY: help setup demo lint test test-backend bench bench-gpu tiny clean

include mk/qgis.mk
include mk/install.mk

help:
	@echo "make demo [IMAGE=... QUESTION=... PROFILE=... MODELS=published|tiny OUT=...]"
	@echo "make lint      ruff check and mypy --strict on core/ (seconds)"
	@echo "make test      lint, then the whole test suite (sets everything up first)"
	@echo "make bench     CPU stage timings with their targets + regression check (bench/baseline.json)"
	@echo "make bench-gpu the models at real size on a CUDA GPU (BENCH_GPU_ARGS=--dry-run: tiny, on the CPU)"
	@echo "make test-backend | test-qgis | plugin-zip | screenshot   parts of the above"
	@echo "make test-install  the real first-run install from the set-up panel (minutes, ~6 GB)"

setup: $(STAMP)

# A fresh Debian 12 has python3 without venv/pip; install them once.
.system-deps-checked:
	@if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then \
	  echo "== installing python3-venv (needs root)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip; \
	fi
	@touch $@

$(STAMP): pyproject.toml .system-deps-checked
	@test -x $(BACKEND_PY) || $(PYTHON) -m venv $(BACKEND_VENV)
	@echo "== backend venv: torch ($(TORCH_PINS)) and the backend extras"
	$(BACKEND_PY) -m pip install -q --disable-pip-version-check $(TORCH_PINS)
	$(BACKEND_PY) -m pip install -q --disable-pip-version-check -e '.[backend,train,dev]'
	@touch $@

tiny: $(STAMP)
	@test -f $(TINY_DIR)/models.json || $(BACKEND_PY) -m georeasoner_plugin.backend.cli make-tiny $(TINY_DIR)

demo: $(STAMP)
	@$(BACKEND_PY) -m georeasoner_plugin.backend.demo --image "$(IMAGE)" --question "$(QUESTION)" \
	  --profile $(PROFILE) --models $(MODELS) --out "$(OUT)" --tiny-dir "$(TINY_DIR)"

# Fast static checks: ruff's lint rules on every file, mypy --strict on core/ ([tool.ruff] and
# [tool.mypy] in pyproject.toml). `ruff format` is configured but not enforced yet.
lint: $(STAMP)
	$(BACKEND_PY) -m ruff check .
	$(BACKEND_PY) -m mypy

# Lint first, then backend, training and core tests in the backend venv, then the plugin tests in
# QGIS's Python.
test: lint
	@$(MAKE) --no-print-directory test-backend
	@$(MAKE) --no-print-directory test-qgis

test-backend: $(STAMP)
	$(BACKEND_PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP) qgis-setup
	$(BACKEND_PY) -m bench
	QT_QPA_PLATFORM=offscreen $(QGIS_PY) bench/bench_correct_qgis.py

BENCH_GPU_ARGS ?=
bench-gpu: $(STAMP)
	$(BACKEND_PY) -m bench gpu $(BENCH_GPU_ARGS)

clean:
	rm -rf out .cache .pytest_cache .hypothesis dist build *.egg-info
