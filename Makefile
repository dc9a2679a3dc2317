# Two commands do everything (see README): `make demo` and `make test`.
# Each creates or updates .venv at the repo root when needed, installs the project with the tested pins, then runs.
PY      := .venv/bin/python
STAMP   := .venv/.installed
SPEC    ?= ablations/table3_synthetic.yaml

.PHONY: demo test venv lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m more ablate $(SPEC)
	$(PY) -m more report $(SPEC)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check more tests bench

bench: $(STAMP)
	$(PY) bench/bench_losses.py
	$(PY) bench/bench_par.py --threads 1
	$(PY) bench/bench_model.py
	$(PY) bench/bench_train_step.py --threads 1
	$(PY) bench/bench_validation.py --threads 1

clean:
	rm -rf work .pytest_cache
