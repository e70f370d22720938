"""Profiles split over processes (torch.distributed, gloo): the same folder as one process's."""

from __future__ import annotations

import pytest
import torch
from helpers import torchrun

from ntk_advisor.profiling import distributed


@pytest.mark.parametrize("size", [2, 3])
def test_modules_are_dealt_by_cost_and_every_one_is_taken_once(monkeypatch, size):
    items = [f"m{i}" for i in range(10)]
    costs = [float(c) for c in (9, 1, 1, 8, 2, 2, 7, 3, 3, 1)]
    monkeypatch.setattr(distributed, "world", lambda: size)
    shares = []
    for me in range(size):
        monkeypatch.setattr(distributed, "rank", lambda me=me: me)
        shares.append(distributed.my_share(items, costs))
    assert sorted(m for share in shares for m in share) == sorted(items)  # a partition
    loads = [sum(costs[items.index(m)] for m in share) for share in shares]
    assert max(loads) - min(loads) <= max(costs)  # largest first to the least loaded: balanced within one item
    assert all(share == [m for m in items if m in share] for share in shares)  # in the model's order


def test_one_process_takes_everything():
    assert distributed.world() == 1 and distributed.rank() == 0
    assert distributed.my_share([1, 2, 3], [3.0, 2.0, 1.0]) == [1, 2, 3]
    assert distributed.merge_on_rank0({"a": 1}) == {"a": 1}
    assert distributed.sum_over_processes() is None


def test_two_gloo_processes_write_the_folder_of_one(tiny_model_folder, tiny_csv, tmp_path):
    from ntk_advisor.advice.recommend import RecommendConfig, recommend
    from ntk_advisor.profiling.folder import load_profile, save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile

    settings = dict(samples=8, max_length=12, signal_samples=64)
    single = save_profile(profile(ProfileConfig(model=str(tiny_model_folder), data=str(tiny_csv), device="cpu",
                                                **settings)), tmp_path / "one")
    done = torchrun(["-m", "ntk_advisor", "profile", "--model", tiny_model_folder, "--data", tiny_csv, "--samples", 8,
                     "--max-length", 12, "--signal-samples", 64, "--device", "cpu", "--out", tmp_path / "two"], 29517)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = load_profile(single), load_profile(tmp_path / "two")
    assert two.settings["distributed"] == {"processes": 2, "probe_features": "by examples",
                                           "label_gradient": "by examples", "kernels": "by modules"}
    assert set(two.kernels) == set(one.kernels)
    for name, kernel in one.kernels.items():
        assert float((two.kernels[name] - kernel).norm()) <= 1e-6 * float(kernel.norm()) + 1e-12, name
    for group in ("rows", "cols", "rows_signal", "cols_signal"):
        for name, values in one.scores[group].items():
            torch.testing.assert_close(two.scores[group][name], values, rtol=1e-6, atol=1e-12)
    for name, tensor in one.head.items():
        assert torch.equal(two.head[name], tensor), name  # the same features, so the same probe
    advised = [recommend(folder, RecommendConfig(budget=400)) for folder in (single, tmp_path / "two")]
    assert [(t.module, t.indices) for t in advised[0].targets] == [(t.module, t.indices) for t in advised[1].targets]


DISAGREEING = """
import os, sys
from ntk_advisor.errors import NtkAdvisorError
from ntk_advisor.profiling.profiler import ProfileConfig, profile

samples = 8 if os.environ["RANK"] == "0" else 10  # process 1 was started with other arguments
try:
    profile(ProfileConfig(model=sys.argv[1], data=sys.argv[2], samples=samples, max_length=12, signal_samples=0,
                          device="cpu"))
except NtkAdvisorError as exc:
    os.write(1, ("ERROR " + str(exc) + "\\n").encode())  # one write: two processes share the pipe
"""


def test_processes_started_with_other_settings_stop_with_one_line(tiny_model_folder, tiny_csv, tmp_path):
    script = tmp_path / "disagree.py"
    script.write_text(DISAGREEING)
    done = torchrun([script, tiny_model_folder, tiny_csv], 29519)
    errors = [line for line in done.stdout.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 2, done.stdout + done.stderr[-2000:]  # both processes stop, each with the same line
    assert all("process 1 of 2 was started with other settings than process 0 (samples)" in e for e in errors)
