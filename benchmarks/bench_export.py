"""Export time and file sizes of a real minilm-l6 run, both formats (median of 3 runs each).

    .venv/bin/python benchmarks/bench_export.py RUN_DIR
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from ntk_advisor.exporting.export import export


def main(run_dir: str) -> None:
    print(f"{'format':<8}{'median s':>10}{'parity':>10}  files")
    for fmt in ("hf", "onnx"):
        times, report = [], None
        for i in range(3):
            with tempfile.TemporaryDirectory() as scratch:
                report = export(run_dir, fmt, Path(scratch) / "out")
                times.append(report.seconds)
        parity = "-" if report.max_abs_logit_difference is None else f"{report.max_abs_logit_difference:.1e}"
        files = ", ".join(f"{n} {s / 2**20:.1f} MiB" for n, s in report.files.items() if s > 2**16)
        print(f"{fmt:<8}{statistics.median(times):>10.1f}{parity:>10}  {files}")


if __name__ == "__main__":
    main(sys.argv[1])
