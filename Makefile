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

# The whole path offline on 2 CPU cores: synthetic data -> distill -> export --int8 -> bench.
# runs/demo and bundles/demo belong to the demo and are rebuilt every time.
demo: install
	$(PY) -m distill synthetic data/synthetic-birds
	rm -rf runs/demo bundles/demo
	$(PY) -m distill --config configs/demo.yaml
	$(PY) -m export runs/demo/best.pt --int8 --out bundles/demo
	$(PY) -m runtime.bench bundles/demo --data data/synthetic-birds --out runs/demo/bench

clean:
	rm -rf $(VENV) runs/demo bundles/demo data/synthetic-birds
