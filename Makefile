# Stockade: `make demo` runs the demo under the enforcer with the console open;
# `make test` runs the test suite. Both run the idempotent `make setup` first.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test attack bench screenshots clean-test

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-test:
	@bash scripts/clean-test.sh
