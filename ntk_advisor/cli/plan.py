"""`ntk-advisor plan`: what a profile will cost, from the model's config alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..profiling.config import ProfileConfig
from .app import app
from .console import (
    DeviceOption,
    JsonOption,
    LabelColumnOption,
    MaxLengthOption,
    ModelOption,
    SamplesOption,
    TextColumnOption,
    out,
    print_json,
)


@app.command()
def plan(
    model: ModelOption = ProfileConfig.model,
    data: Annotated[Optional[str], typer.Option(help=(
        "Data the profile will read: its classes, split sizes and token lengths refine the plan (only the "
        "tokenizer is loaded). Without it: --outputs classes and --max-length tokens per example."))] = None,
    text_column: TextColumnOption = ProfileConfig.text_column,
    label_column: LabelColumnOption = ProfileConfig.label_column,
    samples: SamplesOption = ProfileConfig.samples,
    max_length: MaxLengthOption = ProfileConfig.max_length,
    outputs: Annotated[int, typer.Option(help="C, the classes, when no --data is given.")] = 2,
    head: Annotated[str, typer.Option(help="probe, random or auto, as for profile.")] = "probe",
    signal_samples: Annotated[Optional[int], typer.Option(help="M, label-gradient examples, as for profile.")] = None,
    capture_mib: Annotated[int, typer.Option(help="Capture cap per pass, as for profile (0: from free memory).")] = ProfileConfig.capture_mib,
    device: DeviceOption = ProfileConfig.device,
    processes: Annotated[int, typer.Option(help=(
        "P processes under torchrun: the figures become the busiest process's (profiling over processes, "
        "docs/devices.md)."))] = 1,
    device_memory_gib: Annotated[Optional[float], typer.Option(help=(
        "GiB free on a GPU the profile will run on (e.g. 80 for an H100), when it is not this machine's; "
        "sizes the capture groups as profile would there."))] = None,
    dtype: Annotated[str, typer.Option(help="Weights' dtype, as for profile.")] = ProfileConfig.dtype,
    device_tflops: Annotated[Optional[float], typer.Option(help=(
        "Also estimate the time on a device that sustains this many TFLOP/s (e.g. an H100's float32 "
        "matrix rate)."))] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help=(
        "Plan one training step of this recipe instead of a profile: the recipe is placed on the model built "
        "on the meta device; its data's token lengths (the tokenizer only) give the batches' padded length and "
        "the run's steps. --device-tflops applies, and --dtype plans the weights in another dtype (train runs "
        "float32: that is for a trainer of your own); the other options are the profile's."))] = None,
    as_json: JsonOption = False,
):
    """Estimate a profile's (or, with --recipe, a training step's) flops, memory and time before running it:
    no weights are loaded (the model is built on torch's meta device from its config) and the time comes from a
    one-second measurement of this machine's matrix-product rate. docs/plan.md gives the formulas and the
    measured ratio to real runs."""
    from ..profiling.plan import calibrate, data_facts, plan_profile

    if recipe is not None:
        return _plan_training(recipe, dtype, device_tflops, as_json)

    config = ProfileConfig(model=model, data=data or ProfileConfig.data, text_column=text_column,
                           label_column=label_column, samples=samples, max_length=max_length, head=head,
                           signal_samples=signal_samples, capture_mib=capture_mib, dtype=dtype, device=device)
    facts = data_facts(config) if data else {"num_outputs": outputs}
    free = int(device_memory_gib * 2**30) if device_memory_gib is not None else None
    result = plan_profile(config, **facts, free_bytes=free, device_type="cuda" if free is not None else None,
                          processes=processes)
    rate = calibrate(width=result.settings["hidden_size"])
    here = result.seconds(rate)
    device = result.seconds(device_tflops * 1e12) if device_tflops else None
    if as_json:
        return print_json({"settings": result.settings, "flops": result.flops, "memory_bytes": result.memory,
                           "groups": result.groups, "passes": result.passes, "routes": result.routes,
                           "this_machine": {"flops_per_second": rate, "seconds": here},
                           "device": {"flops_per_second": device_tflops * 1e12, "seconds": device} if device else None})
    _print_plan(result, here, device)
    out.print(f"this machine: {rate / 1e9:,.0f} GFLOP/s on a float32 matrix product; a whole profile sustains less "
              "(docs/plan.md: measured ratio), so read the seconds as a lower bound")


def _print_plan(result, here: dict, device: dict | None) -> None:
    """The plan's table of flops and seconds, then its memory line."""
    s = result.settings
    _print_flops(f"profile of {s['model']}: N={s['samples']}, T̄={s['mean_tokens']:.1f} of {s['max_length']}, "
                 f"C={s['outputs']}, {s['modules']} modules, M={s['signal_samples']:,}"
                 + (f"; per process, the busiest of {s['processes']} ({s['modules_per_process']} modules)"
                    if s["processes"] > 1 else ""), result.flops, here, device)
    m = result.memory
    out.print(f"memory: weights {m['weights'] / 2**20:,.0f} MiB, captures {m['captures'] / 2**20:,.0f} MiB in "
              f"{result.groups} group(s) of at most {s['capture_mib']} MiB, kernels {m['kernels'] / 2**20:,.1f} MiB; "
              f"{result.passes} backward pass(es) per group; routes {result.routes}")


def _plan_training(path: Path, dtype: str, device_tflops: float | None, as_json: bool) -> None:
    """`plan --recipe`: one training step and the whole run, from the recipe and its data's tokenizer."""
    import torch

    from ..profiling.plan import calibrate
    from ..recipe.io import load_recipe
    from ..training.plan import data_step_facts, plan_step

    recipe = load_recipe(path)
    facts = data_step_facts(recipe)
    result = plan_step(recipe, facts["tokens"], facts["peak_tokens"], facts["steps"], dtype=getattr(torch, dtype))
    rate = calibrate(width=result.settings["hidden_size"])
    here = result.seconds(rate)
    device = result.seconds(device_tflops * 1e12) if device_tflops else None
    if as_json:
        return print_json({"settings": result.settings, "trainable": result.trainable, "flops": result.flops,
                           "memory_bytes": result.memory, "this_machine": {"flops_per_second": rate, "seconds": here},
                           "device": {"flops_per_second": device_tflops * 1e12, "seconds": device} if device else None})
    s = result.settings
    _print_flops(f"one training step of {path.name}: {s['method']} on {s['model']}, {result.trainable:,} trainable, "
                 f"batch {s['batch_size']} padded to {s['tokens']:.1f} tokens on average", result.flops, here, device)
    m = result.memory
    out.print(f"memory: weights {m['weights'] / 2**20:,.0f} MiB, trainable state {m['trainable state'] / 2**20:,.1f} "
              f"MiB, activations {m['activations'] / 2**20:,.0f} MiB at the longest batch ({s['peak_tokens']} tokens)")
    run = f"{s['steps'] * here['total'] / 60:,.3g} min here" + (
        f", {s['steps'] * device['total'] / 60:,.3g} min on the device" if device else "")
    out.print(f"the run: {s['steps']:,} steps, about {run} without evaluation; this machine: {rate / 1e9:,.0f} GFLOP/s "
              "on a float32 matrix product, more than a whole step sustains (docs/plan.md: measured ratio)")


def _print_flops(title: str, flops: dict, here: dict, device: dict | None) -> None:
    """A plan's parts: GFLOP and seconds here (and on the device), then the total."""
    table = Table("part", "GFLOP", "seconds here", *(["seconds on device"] if device else []), title=title)
    for part, value in [*flops.items(), ("total", sum(flops.values()))]:
        table.add_row(part, f"{value / 1e9:,.1f}", f"{here[part]:.3g}", *([f"{device[part]:.3g}"] if device else []))
    out.print(table)
