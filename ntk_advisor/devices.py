"""Where the model runs: ``--device auto|cpu|cuda|cuda:N|mps``, and how much memory it has free.

Every command that runs the model takes the same names. ``auto`` (the default) is the first
CUDA GPU when torch sees one, else Apple's MPS, else the CPU. What the profile keeps (kernels,
scores, spectra: N×N and d-sized tensors) comes back to the CPU; only the model, its
activations and the per-module contractions live on the device.
"""

from __future__ import annotations

import os
import re

from .errors import NtkAdvisorError

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"


def check_device_name(name: str, option: str = "--device") -> str:
    """A device name's spelling, without importing torch (configs call this in ``check``)."""
    if name in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", name):
        return name
    raise NtkAdvisorError(f"unknown {option} '{name}': use {DEVICE_NAMES}")


def resolve_device(name: str = "auto"):
    """``torch.device`` for a device name; a device this machine lacks is a one-line error."""
    import torch

    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise NtkAdvisorError("--device mps: this torch has no usable MPS device (Apple silicon only); use "
                                  "--device cpu or auto")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise NtkAdvisorError(f"--device {name}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                              f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto")
    device = torch.device(name) if ":" in name else torch.device("cuda", torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        raise NtkAdvisorError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                              f"numbered 0 to {torch.cuda.device_count() - 1}")
    return device


def check_dtype_on(device, dtype_name: str, option: str = "--dtype") -> None:
    """A weight dtype the device cannot run is a one-line error before any weight loads."""
    import torch

    if device.type == "mps" and dtype_name == "float64":
        raise NtkAdvisorError(f"{option} float64 on mps: Apple's MPS has no float64; use float32 (or --device cpu "
                              "for an exact float64 profile)")
    if device.type == "cuda" and dtype_name == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise NtkAdvisorError(f"{option} bfloat16 on {device}: this GPU ({torch.cuda.get_device_name(device)}) has "
                              "no bfloat16 arithmetic; use float16 or float32")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def free_memory_bytes(device) -> int:
    """Memory free for new tensors on ``device`` now: the CUDA driver's free figure, MPS's
    recommended working set less what torch holds, or the kernel's MemAvailable on the CPU."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    return host_available_bytes()


def host_available_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); elsewhere the free physical pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


CAPTURE_SHARE = 0.25
CAPTURE_FLOOR_MIB = 64
CAPTURE_CEILING_MIB = {"cpu": 512, "accelerator": 16384}


def capture_budget_mib(free_bytes: int, device_type: str = "cpu") -> int:
    """The capture cap of a profile, from the memory free once the model is loaded:

        cap = clamp(CAPTURE_SHARE · free, 64 MiB, ceiling)

    The captures are the modules' inputs x (views of what the forward graph saves anyway)
    and one pass's δ; the other three quarters stay for the graph's activations (the
    attention probabilities, N·heads·T² per layer, are the largest part at long T), the
    reused 32 MiB gradient buffer and the per-block contractions. Past one group, more
    memory saves only repeated passes. The ceiling is 16 GiB on a GPU, where the passes are
    cheap and memory is what limits N and T, and 512 MiB on the CPU, where a profile shares
    the machine with everything else: smollm2-135m's 211 modules at N = 32 took 36 s at a
    3.45 GiB peak in 4 groups and 20 s at 5.73 GiB in one (docs/decoders.md).
    """
    ceiling = CAPTURE_CEILING_MIB["cpu" if device_type == "cpu" else "accelerator"]
    return int(min(max(CAPTURE_SHARE * free_bytes / 2**20, CAPTURE_FLOOR_MIB), ceiling))
