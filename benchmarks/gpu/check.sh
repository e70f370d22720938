#!/bin/bash
# The one prepared GPU check (issue 19). On the device machine, from the repository root,
# after `bash benchmarks/gpu/pack.sh` here:
#   run(command="bash benchmarks/gpu/check.sh", carry=[".gpu"], timeout_s=420)
# It must fit in about 15 minutes of device time with one rerun (the CPU reference profiles,
# on the machine's 16 cores, are most of it: hence M = 256); each model's tables are
# written as soon as it ends, so a run cut short still returns the models it finished.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/wheels/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD NTK_ADVISOR_CACHE=$PWD/.gpu/cache PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/gpu/results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1
python3 benchmarks/gpu/check.py --out "$OUT" --device cuda \
  --models .gpu/models/minilm-l6 .gpu/models/mpnet-base .gpu/models/smollm2-135m \
  --samples 64 --max-length 48 --signal-samples 256 --steps 30 2>&1 | tee "$OUT/check.log"
