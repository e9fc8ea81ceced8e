# Stockade: `make demo` runs the demo under the enforcer with the console open;
# `make test` runs the test suite. Both run the idempotent `make setup` first.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test attack respond demo-down bench screenshots clean-test

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

# The demo's attack on the weak app (after `make demo`); `make respond`: protect, replay,
# freeze, forensics; `make demo-down` stops and removes what `make demo` started.
attack:
	@$(PY) demo/attack.py

respond:
	@$(PY) demo/attack.py --respond

demo-down:
	@bash scripts/demo.sh down

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Real screenshots of every console view (SVG + PNG) into screenshots/.
screenshots: setup
	$(PY) scripts/screenshots.py

clean-test:
	@bash scripts/clean-test.sh --all
