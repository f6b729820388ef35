# The README's two commands: `make demo` and `make test`. Each sets up .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
UI_HOST ?= 127.0.0.1
UI_PORT ?= $(or $(CATGAN_UI_PORT),5000)

.PHONY: setup demo test ui 

setup: $(STAMP)

# Reinstall only when the project's dependencies change, so a second call starts in seconds.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m catgan.demo

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

ui: $(STAMP)
	UI_HOST=$(UI_HOST) UI_PORT=$(UI_PORT) $(BIN)/python -m catgan.ui
