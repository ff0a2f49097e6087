# The two commands of the README. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: test demo lint bench-data clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/hardattn train --agent reinforce --env GlimpseCluttered60-v0 --preset-demo

lint: $(STAMP)
	$(VENV)/bin/ruff check hardattn envs agents tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
