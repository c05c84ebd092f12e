#!/usr/bin/env bash
# One prepared GPU check for a lent H100/H200 (finishes in well under 5 minutes):
# cache-build throughput and training throughput of (a) baseline, (b) KD online, (c) KD cached,
# bf16 autocast, ResNet-18 student at 224 px, open_clip ViT-B-32 and ViT-L-14 teachers (random weights).
#
# The GPU image lacks open_clip: download its wheels here first (see .library/device/README.md):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     open_clip_torch==3.3.0 ftfy wcwidth fire termcolor   (the image has torch, timm, regex, tqdm, pyyaml)
# then run with the device tool: carry [".whl"], command "bash benchmarks/gpu_check.sh".
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
out="${OUT:-benchmarks/results}"
python3 benchmarks/kd_overhead.py --teachers ViT-B-32,ViT-L-14 --rounds 4 --input_size 224 --views 2 \
  --workers 12 --classes 20 --train_per_class 120 --batch_size 128 --out "$out/kd_overhead_gpu.json"
