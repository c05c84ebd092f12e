# Two commands set up everything on a fresh machine: `make test` and `make demo`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install test demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q -x

demo: install
	$(PY) -m distill synthetic data/synthetic-birds
	$(PY) -m distill --config configs/demo.yaml

clean:
	rm -rf $(VENV) runs bundles data/synthetic-birds
