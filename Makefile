# The two quick-start commands are `make run` and `make test` (README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Flags of a bench-* target's script, e.g. BENCH_ARGS="--duration 15" (each script's --help lists them).
BENCH_ARGS ?=
# The local targets run on the sandbox's settings; manage.py's own default is settings.production.
DEV := DJANGO_SETTINGS_MODULE=settings.dev

.PHONY: run test install services browser promtool migrate reset fuzz bench-accept bench-e2e bench-sandbox bench-faults bench-apns-tokens bench-latency bench-day

$(VENV)/.installed: requirements.txt sandbox/requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

install: $(VENV)/.installed

services:
	bash scripts/services.sh

## Headless Chromium and ChromeDriver (Debian packages) for the admin's browser tests.
browser:
	bash scripts/browser.sh

migrate: install services
	$(DEV) $(PY) manage.py migrate --noinput -v 0

## Start sandbox, API, one worker pool per channel, dispatcher and Flower; send a demo notification.
run: migrate
	$(PY) -m devtools.run

## Prometheus' promtool (Debian package `prometheus`) for the alert rules' tests.
promtool:
	bash scripts/promtool.sh

## Run the whole test suite against the real services and the provider sandbox.
test: install services browser promtool
	$(PY) -m pytest $(PYTEST_ARGS)

## Forget the local system's state: database `notify`, its queues, cache, sandbox and logs.
reset: install services
	psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS notify" -c "CREATE DATABASE notify"
	$(DEV) $(VENV)/bin/celery -A notify purge -f
	redis-cli -n 0 flushdb >/dev/null
	rm -rf var/sandbox var/log

## Deliveries/s end to end next to (a) a no-op Celery task and (b) a plain Celery pipeline
## (bench/plain_pipeline.py), with the ratios and the CPU per component.
bench-e2e: migrate
	$(PY) bench/e2e.py $(BENCH_ARGS)

## Accept path alone: requests/s and p50/p99 of the send API next to a bare DRF view validating
## the same body (wrk, the Debian package, installed by scripts/wrk.sh).
bench-accept: migrate
	bash scripts/wrk.sh
	$(PY) bench/accept.py $(BENCH_ARGS)
## Accept → provider p50/p99/max at 185 deliveries/s in the daily mix for 60 s, per channel, then
## each process's resident memory (bench/memory.py).
bench-latency: migrate
	$(PY) bench/latency.py $(BENCH_ARGS)

## A compressed day: 100,000 pushes, 10,000 SMS and 50,000 emails by single sends, bulk and
## broadcasts at once, checked against the sandbox's records (zero lost, zero duplicated), then
## each process's resident memory. BENCH_ARGS="--scale 0.1" for a tenth.
bench-day: migrate
	$(PY) bench/day.py $(BENCH_ARGS)

bench-sandbox: install
	$(PY) bench/sandbox_bench.py

bench-faults: migrate
	$(PY) bench/faults.py

## APNs in strict token mode: 10,000 pushes from two worker pools, zero 429s.
bench-apns-tokens: migrate
	$(PY) bench/apns_tokens.py

## Property-based run of the OpenAPI schema (schemathesis, over 1,000 requests) against a started
## API; FUZZ_ARGS e.g. "--max-examples 100 --seed 2", or "--url http://127.0.0.1:8000 --key <admin key>".
fuzz: install services
	$(PY) bench/schema_fuzz.py $(FUZZ_ARGS)
