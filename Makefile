# The README's two commands: `make demo` and `make test`. Each sets up .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
UI_HOST ?= 127.0.0.1
UI_PORT ?= $(or $(CATGAN_UI_PORT),5000)
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5000
SERVER_DIR ?= .server
SERVER_AUTH ?=

.PHONY: setup demo test ui server server-stop server-user

setup: $(STAMP)

# Reinstall only when the project's dependencies change, so a second call starts in seconds.
# uv installs the same pins about 2.5x faster than pip (it unpacks CUDA torch's 4 GB in parallel),
# reading the indexes pip is configured with; plain pip takes over if uv cannot run here.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv && \
	  UV_EXTRA_INDEX_URL="$$($(BIN)/python -m pip config get global.extra-index-url 2>/dev/null)" \
	  UV_FIND_LINKS="$$($(BIN)/python -m pip config get global.find-links 2>/dev/null)" \
	  $(BIN)/uv pip install -q --python $(BIN)/python --index-strategy unsafe-best-match \
	    --compile-bytecode -e '.[dev]' \
	|| $(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m catgan.demo $(if $(EPOCHS),--epochs $(EPOCHS))

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

ui: $(STAMP)
	UI_HOST=$(UI_HOST) UI_PORT=$(UI_PORT) $(BIN)/python -m catgan.tracking.ui

# A team's MLflow server (catgan/tracking/server.py): PostgreSQL store in $(SERVER_DIR), served artifacts.
# Users log in unless it serves loopback only; SERVER_AUTH=1 or 0 decides instead.
server: $(STAMP)
	$(BIN)/python -m catgan.tracking.server start --host $(SERVER_HOST) --port $(SERVER_PORT) --dir $(SERVER_DIR) \
	  $(if $(SERVER_AUTH),--auth $(SERVER_AUTH))

server-stop: $(STAMP)
	$(BIN)/python -m catgan.tracking.server stop --dir $(SERVER_DIR)

# A teammate's user on that server; the password goes to $(SERVER_DIR)/credentials/$(NAME) (0600).
server-user: $(STAMP)
	$(BIN)/python -m catgan.tracking.server add-user "$(NAME)" --dir $(SERVER_DIR)
