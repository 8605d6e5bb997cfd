# One entry point for people, pre-commit and CI.
# `make serve` runs the main job (the chat example served); `make test` runs every test. Both
# set themselves up. `make demo` runs the chat example embedded, end to end.

PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
CARGO  ?= cargo

.PHONY: setup build serve dev demo test test-rust test-python test-fuzz fuzz bench bench-rust fmt lint stubtest clean

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

# pip installs the package editable (python/ is imported from the repository) with the
# venv's maturin, which finds the extension `setup` built up to date (nothing rebuilt).
PIP_EDITABLE = PATH="$(abspath $(VENV))/bin:$$PATH" $(VPY) -m pip install --quiet --no-build-isolation -e

# Build the Rust extension (release) into python/reactive/, showing cargo's progress
# ("Compiling ..." lines), then install the package editable with its test extras (the
# Python dependencies quietly).
setup: $(VPY)
	@$(VPY) -c 'import reactive._core' 2>/dev/null || echo "setup: building the Rust extension (release; the first build takes 2-5 minutes)..."
	$(VPY) -m pip install --quiet 'maturin>=1.9.4,<2'
	VIRTUAL_ENV="$(abspath $(VENV))" $(VPY) -m maturin develop --release --skip-install
	$(PIP_EDITABLE) '.[test]'

build: setup

# The main job: the chat example served over WebSocket + HTTP on 127.0.0.1:3210, on the
# embedded SQLite default (./.reactive/db.sqlite3). `make serve PORT=3300 APP=dir DB=url`.
PORT ?= 3210
APP  ?= examples/chat
DB   ?=
serve: setup
	$(VPY) -m reactive.server --app $(APP) --port $(PORT) $(if $(DB),--db $(DB))

# The same with --dev: the app reloads on save.
dev: setup
	$(VPY) -m reactive.server --app $(APP) --port $(PORT) --dev $(if $(DB),--db $(DB))

demo: setup
	$(VPY) examples/chat_demo.py

test: setup test-rust test-python test-fuzz

test-rust:
	$(CARGO) test -p reactive-core --release

# A short coverage-guided run of every fuzz target from the kept corpus (cargo fuzz, nightly).
test-fuzz:
	scripts/fuzz.sh 10

# The long run by hand: FUZZ_SECONDS per target, then merge the finds into the corpus.
FUZZ_SECONDS ?= 600
fuzz:
	scripts/fuzz.sh --merge $(FUZZ_SECONDS)

# The backend tests need PostgreSQL and MariaDB: private ones are started for the run (and
# installed from Debian's packages when missing and root) unless REACTIVE_TEST_*_URL are set.
test-python:
	scripts/with-dbservers.sh $(VPY) -m pytest -q

bench: setup
	$(PIP_EDITABLE) '.[bench]'
	$(VPY) benches/run.py

bench-rust:
	$(CARGO) bench -p reactive-core

fmt: setup
	$(CARGO) fmt --all
	$(VPY) -m ruff format python tests benches examples
	$(VPY) -m ruff check --fix python tests benches examples

lint: setup
	$(PIP_EDITABLE) '.[dev]'
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(VPY) -m ruff check python tests benches examples
	$(VPY) -m ruff format --check python tests benches examples
	$(VPY) -m mypy python/reactive
	$(VPY) -m mypy.stubtest reactive._core

clean:
	rm -rf $(VENV) target .pytest_cache
