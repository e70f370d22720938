"""The GPU check (issue 19): profile, advise and train on a GPU, against the CPU and the plan.

Per model: a float32 profile on the CPU (the reference), then float32 and bfloat16 profiles
on the device, each timed with its peak device memory; the agreement of each device profile
with the CPU one (relative Frobenius error of the total kernel, worst Spearman ρ of a module's
label-gradient row scores, share of the advised RoCoFT rows that are the same); `plan`'s
estimate of the profile at the device's measured matrix rate next to the measured time. Then
one advised RoCoFT run and one PEFT LoRA (q, v) run at the same budget on the device: median
step time and peak memory. Writes gpu_check.json and gpu_check.md to --out.

    python benchmarks/gpu/check.py --out DIR [--device cuda] [--models minilm-l6 ...]
        [--data vader-movie] [--samples 64] [--max-length 48] [--signal-samples 1024] [--steps 30]

A model whose weights are not on the machine (the device machine takes at most 64 MiB along)
is built from its config.json with seeded random weights and marked so: time and memory do
not depend on the values, the agreement does not either in float32, but the advice of random
weights says nothing. ``--device cpu`` with small settings is the smoke test that keeps this
script working between GPU loans (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench_dtype import _worst_rank_agreement, placement  # noqa: E402

from ntk_advisor.advice.recommend import RecommendConfig, recommend  # noqa: E402
from ntk_advisor.devices import resolve_device  # noqa: E402
from ntk_advisor.profiling.folder import save_profile  # noqa: E402
from ntk_advisor.profiling.plan import plan_profile  # noqa: E402
from ntk_advisor.profiling.profiler import ProfileConfig, profile  # noqa: E402
from ntk_advisor.training.loop import train  # noqa: E402

BUDGET = 21_506


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def matrix_rate(device, dtype: torch.dtype, repeats: int = 10) -> float:
    """flop/s of a size³ matrix product on ``device`` in ``dtype`` (after three warm-ups);
    4096 on a GPU, 512 on a CPU (whose bfloat16 products run about 70× slower than float32)."""
    size = 512 if device.type == "cpu" else 4096
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def timed_profile(config: ProfileConfig, folder: Path):
    device = resolve_device(config.device)
    _reset_peak(device)
    started = time.perf_counter()
    result = profile(config)
    seconds = time.perf_counter() - started
    save_profile(result, folder, force=True)
    return result, {"seconds": round(seconds, 2), "peak_device_mib": _peak_mib(device),
                    "capture_mib": result.settings["capture_mib"]}


def agreement(result, reference, recipe, reference_recipe) -> dict:
    total, ref_total = result.kernels["total"], reference.kernels["total"]
    chosen, ref_chosen = placement(recipe), placement(reference_recipe)
    signal = result.scores.get("rows_signal")
    return {"total_kernel_rel_error": float((total - ref_total).norm() / ref_total.norm()),
            "worst_row_signal_spearman": (_worst_rank_agreement(signal, reference.scores["rows_signal"])
                                          if signal else None),
            "same_advised_rows": len(chosen & ref_chosen) / max(1, len(ref_chosen))}


def train_pair(folder: Path, device: str, steps: int) -> dict:
    """Advised RoCoFT and PEFT LoRA on q, v at one budget: step time and peak memory."""
    figures = {}
    training = {"max_steps": steps, "batch_size": 32, "learning_rate": 2e-3, "early_stopping_patience": 0,
                "checkpoint_every": 10**6}
    for name, fields in (("rocoft advised", {"method": "rocoft"}),
                         ("lora-qv", {"method": "lora", "placement": "lora-qv"})):
        recipe = recommend(folder, RecommendConfig(budget=BUDGET, training=training, **fields))
        _reset_peak(resolve_device(device))
        with tempfile.TemporaryDirectory() as run:
            metrics = train(recipe, Path(run) / "run", device=device).metrics
        figures[name] = {"seconds_per_step_median": metrics["seconds_per_step_median"],
                         "peak_device_mib": _peak_mib(resolve_device(device)),
                         "trainable_parameters": metrics["trainable_parameters"],
                         "test_accuracy": metrics["test"]["accuracy"]}
    return figures


def materialize(model: str, work: Path) -> tuple[str, bool]:
    """(a loadable model, whether its weights are real): a folder with a config.json and no
    weights gets seeded random ones of its architecture, saved with its tokenizer files."""
    folder = Path(model)
    if not (folder / "config.json").exists() or any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
        return model, True
    import shutil

    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    built = getattr(transformers, config.architectures[0])(config)
    target = work / "random-weights"
    built.save_pretrained(target)
    for extra in folder.iterdir():
        if extra.is_file() and not (target / extra.name).exists():
            shutil.copy(extra, target / extra.name)
    return str(target), False


def check_model(model: str, args, work: Path) -> dict:
    model, real = materialize(model, work)
    common = dict(model=model, data=args.data, samples=args.samples, max_length=args.max_length,
                  signal_samples=args.signal_samples, head=args.head)
    reference, ref_figures = timed_profile(ProfileConfig(**common, device="cpu"), work / "cpu")
    advise = RecommendConfig(method="rocoft", budget=BUDGET)
    ref_recipe = recommend(work / "cpu", advise)
    device = resolve_device(args.device)
    rows = {"reference: cpu float32": ref_figures}
    for dtype in args.dtypes:
        folder = work / f"{device.type}-{dtype}"
        result, figures = timed_profile(ProfileConfig(**common, device=args.device, dtype=dtype), folder)
        rate = matrix_rate(device, getattr(torch, dtype))
        estimate = plan_profile(ProfileConfig(**common, dtype=dtype, capture_mib=figures["capture_mib"])).seconds(rate)
        rows[f"{device.type} {dtype}"] = figures | agreement(result, reference, recommend(folder, advise), ref_recipe) \
            | {"plan_seconds": round(estimate["total"], 2), "matrix_tflops": round(rate / 1e12, 1)}
    return {"real_weights": real, "profiles": rows, "training": train_pair(work / f"{device.type}-float32", args.device, args.steps)
            if "float32" in args.dtypes else {}}


def markdown(document: dict) -> str:
    lines = [f"# GPU check on {document['device_name']} (torch {document['torch']})", ""]
    for model, found in document["models"].items():
        weights = "" if found["real_weights"] else " (seeded random weights: time and memory only)"
        lines += [f"## {model}{weights}", "", "| profile | seconds | plan seconds | peak device MiB | capture MiB | "
                  "total-kernel rel. error vs CPU | worst row-signal ρ | same advised rows |", "|---|---|---|---|---|---|---|---|"]
        for name, row in found["profiles"].items():
            cells = [row.get(key) for key in ("seconds", "plan_seconds", "peak_device_mib", "capture_mib",
                                              "total_kernel_rel_error", "worst_row_signal_spearman",
                                              "same_advised_rows")]
            lines.append("| " + " | ".join([name] + ["" if c is None else f"{c:.3g}" if isinstance(c, float)
                                                     else str(c) for c in cells]) + " |")
        if found["training"]:
            lines += ["", "| run (21,506 parameters) | s / step | peak device MiB | test accuracy |", "|---|---|---|---|"]
            for name, row in found["training"].items():
                peak = row["peak_device_mib"]
                lines.append(f"| {name} | {row['seconds_per_step_median']:.3f} | "
                             f"{'' if peak is None else f'{peak:,.0f}'} | {row['test_accuracy']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="*", default=["minilm-l6", "mpnet-base", "smollm2-135m"])
    parser.add_argument("--data", default="vader-movie")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--signal-samples", type=int, default=1024)
    parser.add_argument("--head", default="auto")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    document = {"device": str(device), "torch": torch.__version__, "settings": vars(args) | {"out": str(args.out)},
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
                "models": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        print(f"{model}", flush=True)
        with tempfile.TemporaryDirectory() as work:
            document["models"][model] = check_model(model, args, Path(work))
        (args.out / "gpu_check.json").write_text(json.dumps(document, indent=1) + "\n")  # each model as it ends
        (args.out / "gpu_check.md").write_text(markdown(document))
    print(markdown(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
