#!/bin/bash
# Packs what the GPU check needs into .gpu/ (ignored by git; the device machine takes at most
# 64 MiB along, the working tree included): minilm-l6's real weights stored in bfloat16
# (45 MB), the configs and tokenizers of mpnet-base and smollm2-135m (their weights, 438 and
# 538 MB, do not fit: the check builds seeded random ones), vader-movie, and wheels for the
# packages the machine's image lacks (pydantic, typer's pinned version, peft's, ...).
# Run here, once, from the repository root: bash benchmarks/gpu/pack.sh
set -euo pipefail
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/models .gpu/cache .gpu/wheels
.venv/bin/python - <<'PY'
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ntk_advisor.inputs.models import resolve_model_source

for alias in ("minilm-l6", "mpnet-base", "smollm2-135m"):
    source, target = Path(resolve_model_source(alias)), Path(".gpu/models") / alias
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.suffix == ".safetensors":
            if alias == "minilm-l6":  # real weights, halved: the GPU and CPU profiles both read these
                save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v
                           for k, v in load_file(item).items()}, target / item.name)
        elif item.is_file() and item.suffix != ".bin" and item.stat().st_size < 8 * 2**20:
            shutil.copy(item, target / item.name)
shutil.copy(Path.home() / ".cache/ntk-advisor/vader-movie.jsonl", ".gpu/cache/vader-movie.jsonl")
PY
# The image has torch, transformers, accelerate, peft, scikit-learn, safetensors, rich and
# typer (KINDS.md); pydantic is not in its list. --no-deps: only what is named travels.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.7.0 typing-inspection==0.4.2
du -sh .gpu
