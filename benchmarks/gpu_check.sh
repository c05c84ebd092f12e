#!/usr/bin/env bash
# One prepared GPU check for a lent H100/H200 (about 5 minutes):
#  1. kd_overhead: cache-build throughput and training throughput of (a) baseline, (b) KD online,
#     (c) KD cached, bf16 autocast, ResNet-18 student at 224 px, open_clip ViT-B-32 and ViT-L-14
#     teachers (random weights time the same as trained ones);
#  2. the CUDA tests (tests/test_gpu.py: bf16 cache, bf16 training, nccl under torchrun, torch reference);
#  3. export_formats on that machine's CPU (PyTorch eager vs onnxruntime FP32 vs INT8), trained on the GPU.
#
# The GPU image lacks open_clip and onnxconverter-common: download their wheels here first:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 onnxconverter-common==1.16.0
# then run with the device tool: carry [".whl"], command "bash benchmarks/gpu_check.sh".
# Results land in $OUT (or benchmarks/results): kd_overhead_gpu.json, export_formats_gpu_host.json, logs.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
python3 -c "import torch, torchvision, onnxruntime; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'ort', onnxruntime.__version__)"
# DataLoader workers pass batches through /dev/shm: a container's default 64 MB is too small.
shm_kb=$(df -k --output=avail /dev/shm 2>/dev/null | tail -1 || echo 0)
if [ "${shm_kb:-0}" -lt 4000000 ]; then mount -o remount,size=16G /dev/shm 2>/dev/null || mount -t tmpfs -o size=16G tmpfs /dev/shm || true; fi
df -h /dev/shm
status=0
timeout 200 python3 benchmarks/kd_overhead.py --teachers ViT-B-32,ViT-L-14 --rounds 4 --input_size 224 --views 2 \
  --workers 12 --classes 15 --train_per_class 160 --batch_size 128 --cache_batch_size 256 \
  --out "$out/kd_overhead_gpu.json" 2>&1 | tee "$out/kd_overhead_gpu.log" || status=1
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs 2>&1 | tee "$out/test_gpu.log" || status=1
timeout 120 python3 benchmarks/export_formats.py --epochs 3 --out "$out/export_formats_gpu_host.json" 2>&1 \
  | tee "$out/export_formats_gpu_host.log" || status=1
exit $status
