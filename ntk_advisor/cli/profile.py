"""`ntk-advisor profile`: per-module, per-row and per-column NTK contributions on a probe sample."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .._io import OutputClaim
from ..profiling.config import ProfileConfig
from .app import app
from .console import (
    DataOption,
    DeviceOption,
    JsonOption,
    LabelColumnOption,
    LabelWordOption,
    MaxLengthOption,
    ModelOption,
    SamplesOption,
    TaskOption,
    TemplateOption,
    TextColumnOption,
    err,
    fmt,
    out,
    print_json,
    progress_bar,
    progress_callback,
    prompt_options,
)


@app.command()
def profile(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write (profile.json, kernels.safetensors, head).")],
    model: ModelOption = ProfileConfig.model,
    data: DataOption = ProfileConfig.data,
    text_column: TextColumnOption = ProfileConfig.text_column,
    label_column: LabelColumnOption = ProfileConfig.label_column,
    samples: SamplesOption = ProfileConfig.samples,
    max_length: MaxLengthOption = ProfileConfig.max_length,
    seed: Annotated[int, typer.Option(help="Seed of the splits, the probe sample and the head.")] = ProfileConfig.seed,
    output: Annotated[str, typer.Option(help="Output reduction: trace (any C), margin (binary f1-f0), full (NC x NC).")] = ProfileConfig.reduction,
    head: Annotated[str, typer.Option(help=(
        "probe: fit the new head as a linear probe first; random: keep its init; label-words: the label words' "
        "LM-head rows; auto: label-words when prompting, else probe."))] = ProfileConfig.head,
    task: TaskOption = ProfileConfig.task,
    template: TemplateOption = None,
    label_word: LabelWordOption = None,
    route: Annotated[str, typer.Option(help="structured (fast, default) or jacobian (vmap(jacrev) reference).")] = ProfileConfig.route,
    dtype: Annotated[str, typer.Option(help=(
        "Model weights: float32, float64, bfloat16 or float16 (half precision is contracted in float32; "
        "kernels are float64)."))] = ProfileConfig.dtype,
    module: Annotated[Optional[list[str]], typer.Option("--module", help="Profile only this module (repeatable).")] = None,
    capture_mib: Annotated[int, typer.Option(help=(
        "MiB for the layer inputs and output gradients held at once; past it, modules are profiled in further "
        "forward/backward passes (same kernels, less memory, a little slower). 0: a quarter of the device's free "
        "memory, at least 64 MiB and at most 512 MiB on the CPU or 16 GiB on a GPU (docs/plan.md)."))] = ProfileConfig.capture_mib,
    device: DeviceOption = ProfileConfig.device,
    signal_samples: Annotated[Optional[int], typer.Option(help=(
        "M, training examples for the label-gradient row/column scores that pick which rows to train "
        "(cost grows linearly in M; 0 skips them and recommend falls back to the probe sample's alignment). "
        "Default: 1,024, or 256 for --task sft (the same LoRA ranks as 1,024 there to 0.99; docs/sft.md)."))] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    top: Annotated[int, typer.Option(help="Rows of the summary table.")] = 10,
    as_json: JsonOption = False,
):
    """Compute per-module, per-row and per-column NTK contributions and their spectra on a probe sample."""
    from ..profiling.profiler import ProfileConfig

    config = ProfileConfig(model=model, data=data, text_column=text_column, label_column=label_column,
                           samples=samples, max_length=max_length, seed=seed, reduction=output, head=head,
                           route=route, dtype=dtype, modules=tuple(module or ()), task=task,
                           capture_mib=capture_mib, signal_samples=signal_samples, device=device,
                           **prompt_options(template, label_word))
    result = _profile_into(config, out_dir, force)
    if result is None:  # a process of torchrun other than rank 0
        return
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False)
    summary = {
        "out": str(out_dir),
        "settings": {k: result.settings[k] for k in ("model", "data", "samples", "max_length", "seed", "reduction")},
        "head": result.head_report,
        "total": {k: v for k, v in result.total.items() if k != "spectrum"},
        "timing": result.timing,
        "modules": [m.__dict__ for m in result.modules],
    }
    if as_json:
        return print_json(summary)
    _print_summary(result, top)
    out.print(f"wrote {out_dir} in {result.timing['total_s']:.1f} s")


def _profile_into(config, out_dir: Path, force: bool):
    """Run the profile and write ``out_dir``; under torchrun rank 0 alone claims, writes and
    talks, and the other processes get None."""
    from ..profiling import distributed
    from ..profiling.folder import check_profile_destination, save_profile
    from ..profiling.profiler import profile as run_profile

    main_process = int(os.environ.get("RANK", "0")) == 0
    with OutputClaim(out_dir) if main_process else contextlib.nullcontext():
        check_profile_destination(out_dir, force)
        with progress_bar(disable=not main_process) as bar:
            result = run_profile(config, on_progress=progress_callback(bar) if main_process else None)
        if result is not None:
            save_profile(result, out_dir, force=force)
    distributed.finish()
    return result


def _print_summary(result, top: int) -> None:
    """The top modules by trace, then the total kernel in one line."""
    ranked = sorted(result.modules, key=lambda m: -m.trace)[:top]
    table = Table("module", "role", "W", "trace", "λ_max", "κ", "eff. rank", "alignment", "LOO acc",
                  title=f"top {len(ranked)} of {len(result.modules)} modules by NTK trace")
    table.columns[0].no_wrap = True
    for m in ranked:
        table.add_row(m.name, m.role, f"{m.d_out}x{m.d_in}", fmt(m.trace), fmt(m.lambda_max),
                      fmt(m.condition_number), f"{m.effective_rank:.1f}", fmt(m.alignment), fmt(m.loo_accuracy))
    out.print(table)
    t = result.total
    if result.settings.get("prompt"):
        chosen = result.settings["prompt"]
        out.print(f"prompting with template {chosen['template']!r} and label words "
                  f"{', '.join(repr(w) for w in chosen['label_words'])}", markup=False)
    kind = result.head_report.get("kind")
    head_text = "SFT: each example's completion log-likelihood" if kind == "causal LM head (SFT)" else "random head"
    if kind in ("probe", "label-words") and "validation_accuracy" in result.head_report:
        what = "probe head" if kind == "probe" else "label-word head, zero-shot"
        head_text = f"{what} validation accuracy {result.head_report['validation_accuracy']:.3f}"
    out.print(f"total kernel: trace {fmt(t['trace'])}, κ {fmt(t['condition_number'])}, alignment "
              f"{fmt(t['alignment'])}, LOO kernel-ridge accuracy {fmt(t['loo_accuracy'])} ({head_text})")
