# The README's two commands. Each one creates or refreshes .venv first, so a fresh clone needs nothing else.
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	@.venv/bin/python -m pytest
	@$(MAKE) --no-print-directory lint

lint: setup
	@.venv/bin/ruff check hwprune tests benchmarks examples
	@.venv/bin/ruff format --check hwprune tests benchmarks examples
