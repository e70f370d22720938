"""One process against two under torchrun: a profile and a validate study, timed side by side.

The same command runs as one process (torch's default threads: every core) and under
`torchrun --nproc-per-node 2` with one thread per process, alternately (one, two, one,
two, ...), each pair on fresh output folders; the ratio is taken pair by pair, so a drift of
the machine's speed cancels. The profile folders are compared too: the largest relative
Frobenius distance between the two runs' kernels, and whether the advised rows agree.
On a CPU both arms share the same cores, so this measures what the split costs and saves
there (the passes are repeated on every process, the contractions, probe features and label
gradient are split); on P GPUs each process has its own device.

    .venv/bin/python benchmarks/bench_processes.py [--pairs 3] [--parts profile validate]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
PROFILE = ["profile", "--model", "minilm-l6", "--data", "vader-movie", "--samples", "64", "--max-length", "48",
           "--device", "cpu"]
VALIDATE = ["validate", "--model", "minilm-l6", "--data", "vader-movie", "--method", "rocoft", "--budget", "21506",
            "--arms", "advised,first-k,random-1,random-2", "--seeds", "1", "--key-seeds", "1", "--steps", "30",
            "--samples", "32", "--max-length", "48", "--device", "cpu"]


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - started


def arms(args: list[str], out: Path) -> tuple[list[str], list[str], dict]:
    """(one process, two processes, the second's environment): one thread per process under torchrun."""
    one = [str(BIN / "ntk-advisor"), *args, "--out", str(out / "one")]
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "ntk_advisor",
           *args, "--out", str(out / "two")]
    # torchrun's own files (torchelastic_*) go to the scratch folder, not the shared temp folder
    return one, two, os.environ | {"OMP_NUM_THREADS": "1", "TMPDIR": str(out)}


def agreement(one: Path, two: Path) -> str:
    from ntk_advisor.advice.recommend import RecommendConfig, recommend
    from ntk_advisor.profiling.folder import load_profile

    a, b = load_profile(one), load_profile(two)
    worst = max(float((a.kernels[n] - b.kernels[n]).norm() / a.kernels[n].norm()) for n in a.kernels)
    same = [t.indices for t in recommend(one, RecommendConfig()).targets] == \
           [t.indices for t in recommend(two, RecommendConfig()).targets]
    return f"kernels within {worst:.1e} (relative Frobenius), advised rows {'the same' if same else 'DIFFERENT'}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--parts", nargs="*", default=["profile", "validate"])
    args = parser.parse_args(argv)
    print(f"one process ({os.cpu_count()} cores, torch's default threads) against torchrun --nproc-per-node 2 "
          f"(one thread each), {args.pairs} alternating pairs\n")
    print("| part | one process s, median | two processes s, median | one / two per pair, median (min–max) |")
    print("|---|---|---|---|")
    notes = []
    for part in args.parts:
        command = PROFILE if part == "profile" else VALIDATE
        ones, twos = [], []
        for _ in range(args.pairs):
            with tempfile.TemporaryDirectory() as scratch:
                one, two, env = arms(command, Path(scratch))
                ones.append(timed(one, os.environ.copy()))
                twos.append(timed(two, env))
                if part == "profile" and not notes:
                    notes.append(f"profile: {agreement(Path(scratch) / 'one', Path(scratch) / 'two')}")
        ratios = [a / b for a, b in zip(ones, twos)]
        print(f"| {part} | {statistics.median(ones):.1f} | {statistics.median(twos):.1f} | "
              f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |")
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
