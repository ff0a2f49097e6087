# The two commands of the README. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Pins torch to its CPU build (see constraints.txt); `make test CONSTRAINTS=` lifts the pins.
CONSTRAINTS ?= constraints.txt
STAMP  := $(VENV)/.installed-stamp

.PHONY: test demo lint bench-data clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]" $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# About 3 minutes on 2 quiet CPU cores (154 s measured), plus the install: RAM + REINFORCE on
# cluttered 60x60 MNIST, validation-selected, then the test error once, and the TensorBoard
# command.
demo: $(STAMP)
	$(VENV)/bin/hardattn train --agent reinforce --env GlimpseCluttered60-v0 \
		--total-images 640000 --batch-size 128 --eval-every 500 --checkpoint-every 500

lint: $(STAMP)
	$(VENV)/bin/ruff check hardattn envs agents tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
