"""--device: names, resolution on machines with and without GPUs, the capture budget, and
tensors that follow the model's device (the meta device stands in for a GPU on CI)."""

from __future__ import annotations

import pytest
import torch

from ntk_advisor import devices
from ntk_advisor.errors import NtkAdvisorError
from tests.conftest import tiny_classifier
from tests.helpers import assert_one_line_error, run_cli


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_names_accepted(name):
    assert devices.check_device_name(name) == name


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CUDA", "cpu:0", ""])
def test_device_names_refused_with_the_choices(name):
    with pytest.raises(NtkAdvisorError, match="use auto, cpu, cuda, cuda:N or mps"):
        devices.check_device_name(name)


def _fake_gpus(monkeypatch, count: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


def test_auto_is_the_cpu_without_gpus(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    assert devices.resolve_device("auto") == torch.device("cpu")


def test_auto_takes_the_current_gpu_and_cuda_n_is_checked(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(NtkAdvisorError, match="has 2 CUDA GPU.*numbered 0 to 1"):
        devices.resolve_device("cuda:2")


def test_a_missing_gpu_is_a_clear_error(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(NtkAdvisorError, match="no CUDA GPU here.*use --device cpu or auto"):
            devices.resolve_device(name)
    with pytest.raises(NtkAdvisorError, match="no usable MPS"):
        devices.resolve_device("mps")


def test_capture_budget_is_a_quarter_of_free_memory_within_bounds():
    gib = 2**30
    assert devices.capture_budget_mib(8 * gib, "cuda") == 2048
    assert devices.capture_budget_mib(0, "cuda") == devices.capture_budget_mib(0) == devices.CAPTURE_FLOOR_MIB
    assert devices.capture_budget_mib(1000 * gib, "cuda") == devices.CAPTURE_CEILING_MIB["accelerator"]
    assert devices.capture_budget_mib(2 * gib, "cuda") < devices.capture_budget_mib(4 * gib, "cuda")
    assert devices.capture_budget_mib(20 * gib, "cpu") == devices.CAPTURE_CEILING_MIB["cpu"] == 512
    assert devices.capture_budget_mib(gib // 2, "cpu") == 128


def test_host_free_memory_is_positive_and_below_the_total():
    import os

    free = devices.free_memory_bytes(torch.device("cpu"))
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < free <= total


def test_encode_puts_batches_where_the_model_is():
    loaded = tiny_classifier("bert")
    assert loaded.encode(["good film"], 8)["input_ids"].device.type == "cpu"
    loaded.logits_model.to("meta")
    batch = loaded.encode(["good film", "bad"], 8)
    assert {value.device.type for value in batch.values()} == {"meta"}


def test_theta0_follows_the_parameters_to_their_device():
    from ntk_advisor.training.apply import Proximal

    layer = torch.nn.Linear(3, 2)
    proximal = Proximal(strength=0.1, mode="plain", theta0={"weight": layer.weight.detach().clone()})
    layer.to("meta")  # as Accelerate or a Trainer moves the model after the recipe was applied
    assert [name for name, _ in proximal.trainable(layer)] == ["weight"]
    assert proximal.theta0["weight"].device.type == "meta"
    assert proximal.penalty(layer).device.type == "meta"


def test_profile_records_where_it_ran_and_the_capture_cap(tiny_model_folder, tiny_csv):
    from ntk_advisor.profiling.profiler import ProfileConfig, profile

    common = dict(model=str(tiny_model_folder), data=str(tiny_csv), samples=8, max_length=12, head="random",
                  signal_samples=0)
    sized = profile(ProfileConfig(**common, device="cpu"))
    assert sized.settings["device"] == "cpu"
    assert devices.CAPTURE_FLOOR_MIB <= sized.settings["capture_mib"] <= devices.CAPTURE_CEILING_MIB["cpu"]
    capped = profile(ProfileConfig(**common, capture_mib=1))
    assert capped.settings["capture_mib"] == 1
    for name in sized.kernels:  # more groups, more passes, the same kernels
        torch.testing.assert_close(capped.kernels[name], sized.kernels[name], rtol=1e-6, atol=1e-9)


def test_cli_refuses_a_gpu_this_machine_lacks_before_any_work(tmp_path, capsys, monkeypatch):
    _fake_gpus(monkeypatch, 0)
    out = tmp_path / "profile"
    code, _, err = run_cli(["profile", "--out", str(out), "--device", "cuda:1"], capsys, monkeypatch)
    assert_one_line_error(code, err, "--device cuda:1: torch sees no CUDA GPU here")
    assert not out.exists()
    code, _, err = run_cli(["plan", "--device", "tpu"], capsys, monkeypatch)
    assert_one_line_error(code, err, "unknown --device 'tpu'")


def test_a_dtype_the_device_cannot_run_is_a_clear_error(monkeypatch):
    devices.check_dtype_on(torch.device("cpu"), "bfloat16")  # the CPU runs every dtype (slowly)
    with pytest.raises(NtkAdvisorError, match="MPS has no float64"):
        devices.check_dtype_on(torch.device("mps"), "float64")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    with pytest.raises(NtkAdvisorError, match="Tesla V100.*no bfloat16 arithmetic; use float16 or float32"):
        devices.check_dtype_on(torch.device("cuda", 0), "bfloat16")
    devices.check_dtype_on(torch.device("cuda", 0), "float16")


@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_rocoft_slices_placed_on_a_model_already_on_its_device_run_there(axis):
    """place() or a Trainer callback applies a recipe to a model that is already on the GPU: the
    slice's index must live there too, or the first forward pass fails on a CPU index."""
    from ntk_advisor.methods.rocoft.layer import RowColumnSlice

    base = torch.nn.Linear(5, 4, device="meta")
    layer = RowColumnSlice(base, axis, [1, 3])
    assert layer.indices.device.type == layer.delta.device.type == "meta"
    assert layer(torch.zeros(2, 7, 5, device="meta")).shape == (2, 7, 4)
    assert layer.delta_weight().device.type == "meta"
