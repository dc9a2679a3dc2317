# Two commands do everything (see README): `make demo` and `make test`.
# Each creates or updates .venv at the repo root when needed, installs the project with the tested pins, then runs.
PY      := .venv/bin/python
STAMP   := .venv/.installed
SPEC    ?= ablations/table3_synthetic.yaml
PYTEST_ARGS ?=

.PHONY: demo test venv lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv .venv || { rm -rf .venv; echo "python3 -m venv failed: on Debian/Ubuntu" \
	    "install the venv module first (apt-get install -y python3-venv)" >&2; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m more ablate $(SPEC)
	$(PY) -m more report $(SPEC)

# The browser test needs Chromium: installed first when missing and run as root (else that test is skipped, with the
# reason in pytest's summary). PYTEST_ARGS picks tests, e.g. `make test PYTEST_ARGS=tests/tracking`.
test: $(STAMP)
	@tools/ensure_chromium.sh
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check more tests bench tools

bench: $(STAMP)
	$(PY) bench/bench_losses.py
	$(PY) bench/bench_par.py --threads 1
	$(PY) bench/bench_model.py
	$(PY) bench/bench_train_step.py --threads 1
	$(PY) bench/bench_validation.py --threads 1

clean:
	rm -rf work .pytest_cache
