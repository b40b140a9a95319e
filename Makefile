# One command each: `make demo` runs the pipeline on the demo shop, `make test` runs every check.
# Both create .venv (Python 3.11) and install the pinned requirements on first use.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
export PYTHONPATH := $(CURDIR)

.PHONY: demo airflow preview-run preview screenshots bench test lint typecheck pytest install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt constraints.txt | $(PY)
	$(PIP) install -q -r requirements.txt -c constraints.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PIP) install -q -r requirements-dev.txt -c constraints.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## demo: the real DAG for a week of demo days on a SQLite shop; emails land in .demo/mail/
demo: install-dev
	$(PY) -m tools.demo

## airflow: a local Airflow (api-server, scheduler, dag-processor, triggerer) with the demo shop and an SMTP sink;
##          prints the URL and the login; everything in .airflow/ (ARGS="--fresh", "--port 8081", "--db URL")
airflow: install-dev
	$(PY) -m tools.local_airflow $(ARGS)

## preview-run: what the run at T would send (T=2026-12-01; default tomorrow, 00:00 UTC), as a dry run of the DAG
##              on make airflow's shop and state in .airflow/; sends nothing, needs no running Airflow;
##              CONF='{"send_available": true}' sets params (default: the DAG's, as a scheduled run has them)
T ?=
CONF ?=
preview-run: install-dev
	$(PY) -m tools.local_airflow --preview $(T) $(if $(CONF),--conf '$(CONF)') $(ARGS)

## preview: every kind in every language from sample data, as .eml and .html under previews/
preview: install-dev
	$(PY) -m tools.preview

## bench: the pipeline at shop scale against L_read and L_send (never part of `make test`);
##        SIZE=quick (default, ~2 min) or SIZE=full (1,000,000 order lines; ~15 min a repeat); results in bench/results/
##        SIZE=year: 365 daily runs of the full shop on SQLite, MariaDB and PostgreSQL state (bench/year.py; hours),
##        ARGS="--days 20 --backends postgres" for less; results in bench/results/year.{json,md}
SIZE ?= quick
REPEATS ?= 3
bench: install-dev
	$(if $(filter year,$(SIZE)),$(PY) -m bench.year $(ARGS),$(PY) -m bench.run --size $(SIZE) --repeats $(REPEATS))

## screenshots: every kind in English, 700 px (desktop) and 375 px (phone) wide, as PNGs in docs/screenshots/;
## needs Debian's chromium (.ci/run installs it) and fails if an email overflows either width
screenshots: install-dev
	$(PY) -m tools.picture

## test: lint, type check and the whole test suite
test: lint typecheck pytest

lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install-dev
	$(PY) -m mypy

pytest: install-dev
	$(PY) -m pytest

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache
