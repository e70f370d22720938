"""The contraction routes against explicit per-example gradients (einsum oracle, float64)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntk_advisor.ntk.contractions import (
    GradientBuffer,
    active_tokens,
    choose_route,
    contract,
    gram_route,
    per_example_route,
)


def oracle(x, delta, w):
    """K, row/col energies and alignments from g_r = Σ_t δ_{r,t} x_{r,t}ᵀ formed explicitly."""
    g = torch.einsum("rti,rtj->rij", delta, x)
    projected = torch.einsum("kr,rij->kij", w, g).square()
    return (torch.einsum("rij,qij->rq", g, g), g.square().sum((0, 2)), g.square().sum((0, 1)),
            projected.sum((0, 2)), projected.sum((0, 1)))


def sample(rows, tokens, d_in, d_out, seed, lengths=None):
    """Random x, δ with each row's δ zero past its length, as padding leaves it."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, tokens, d_in, generator=gen, dtype=torch.float64)
    delta = torch.randn(rows, tokens, d_out, generator=gen, dtype=torch.float64)
    if lengths is not None:
        delta *= (torch.arange(tokens)[None, :] < torch.tensor(lengths)[:, None])[..., None]
    w = torch.randn(2, rows, generator=gen, dtype=torch.float64)
    return x, delta, w


def assert_matches(result, expected):
    names = ("kernel", "row_energy", "col_energy", "row_alignment", "col_alignment")
    for name, want in zip(names, expected):
        got = getattr(result, name)
        assert got.dtype == torch.float64 and got.shape == want.shape, name
        assert float((got - want).norm() / want.norm()) < 1e-12, name


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**16),
       st.sampled_from([None, 64, 400, 2**20]))
def test_per_example_route_matches_oracle_in_any_block_size(rows, tokens, d_in, d_out, seed, max_bytes):
    x, delta, w = sample(rows, tokens, d_in, d_out, seed)
    buffer = GradientBuffer() if max_bytes is None else GradientBuffer(max_bytes)
    assert_matches(per_example_route([(x, delta)], w, buffer), oracle(x, delta, w))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**16))
def test_gram_route_matches_oracle(rows, tokens, d_in, d_out, seed):
    x, delta, w = sample(rows, tokens, d_in, d_out, seed)
    assert_matches(gram_route([(x, delta)], w), oracle(x, delta, w))


@pytest.mark.parametrize("route", ["auto", "per-example", "gram"])
def test_inactive_tokens_are_dropped_without_changing_anything(route):
    x, delta, w = sample(5, 7, 6, 4, seed=1, lengths=[3, 7, 1, 5, 2])
    delta[:, 0] = 0.0  # a position no row uses (as every non-pooled token in a last layer)
    kept_x, kept_delta = active_tokens(x, delta)
    assert kept_x.shape[1] == 6 and kept_delta.shape[1] == 6
    assert_matches(contract([(x, delta)], w, route), oracle(x, delta, w))


def test_a_module_that_does_not_reach_the_outputs_has_a_zero_kernel():
    x, delta, w = sample(4, 3, 5, 6, seed=2)
    delta.zero_()
    for route in ("per-example", "gram"):
        result = contract([(x, delta)], w, route)
        assert result.kernel.shape == (4, 4) and not result.kernel.any() and not result.row_energy.any()


def test_route_is_chosen_on_active_tokens_and_recorded():
    x, delta, w = sample(64, 32, 384, 384, seed=3)
    x, delta, w = x.float(), delta.float(), w.float()
    assert choose_route(64, 32, 384, 384) == "per-example"
    assert contract([(x, delta)], w).route == "per-example"
    delta[:, 1:] = 0.0  # only the first token reaches the outputs
    assert choose_route(64, 1, 384, 384) == "gram"
    assert contract([(x, delta)], w).route == "gram"


def test_gradient_buffer_is_reused_and_grows_only_when_needed():
    buffer = GradientBuffer()
    first = buffer.view((4, 5), torch.float32)
    assert buffer.view((2, 3), torch.float32).data_ptr() == first.data_ptr()
    bigger = buffer.view((10, 10), torch.float32)
    assert bigger.shape == (10, 10)
    assert buffer.view((3, 3), torch.float64).dtype == torch.float64


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=2, max_size=7), st.integers(1, 3), st.integers(0, 2**16))
def test_row_blocks_padded_to_their_own_length_give_the_padded_answer(lengths, blocks, seed):
    """Rows split into consecutive blocks, each cut to its own longest row, as length buckets do."""
    tokens = max(lengths)
    x, delta, w = sample(len(lengths), tokens, 5, 3, seed, lengths=lengths)
    cuts = [round(i * len(lengths) / blocks) for i in range(blocks + 1)]
    parts = [(x[a:b, :max(lengths[a:b])], delta[a:b, :max(lengths[a:b])]) for a, b in zip(cuts, cuts[1:]) if b > a]
    expected = oracle(x, delta, w)
    for route in ("per-example", "gram"):
        assert_matches(contract(parts, w, route, GradientBuffer(200)), expected)


def test_wide_modules_are_contracted_in_column_slices_without_changing_the_answer():
    from ntk_advisor.ntk.contractions import SLICE_FLOATS

    x, delta, w = sample(3, 4, 190, 230, seed=5, lengths=[4, 2, 3])
    assert 190 * 230 > 2 * SLICE_FLOATS and (190 * 230) % SLICE_FLOATS  # several slices, the last one partial
    assert_matches(per_example_route([(x[:1], delta[:1]), (x[1:], delta[1:])], w), oracle(x, delta, w))


@pytest.mark.parametrize("route", ["per-example", "gram"])
def test_a_nan_gradient_reaches_the_kernel_instead_of_being_dropped_as_inactive(route):
    x, delta, w = sample(4, 5, 3, 6, seed=4, lengths=[5, 2, 3, 1])
    delta[0, 4, 1] = float("nan")  # a token no other row uses
    assert torch.isnan(contract([(x, delta)], w, route).kernel).any()


@pytest.mark.parametrize("factor", [0, 10**9])  # energies from g's slices / from token Grams
def test_both_energy_paths_match_the_oracle(monkeypatch, factor):
    import ntk_advisor.ntk.contractions as contractions

    monkeypatch.setattr(contractions, "GEMM_OVER_STREAMING", factor)
    x, delta, w = sample(5, 6, 190, 230, seed=6, lengths=[6, 1, 4, 2, 5])
    assert contractions.energies_from_grams([(x, delta)]) == bool(factor)
    assert_matches(per_example_route([(x[:2], delta[:2]), (x[2:], delta[2:])], w, GradientBuffer(2**16)),
                   oracle(x, delta, w))


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("route", ["per-example", "gram"])
def test_half_precision_captures_are_contracted_in_float32(half, route):
    """bf16 / fp16 captures are upcast before any sum: the kernel equals the float64 oracle of
    the same (rounded) values to float32 accuracy, far tighter than a bf16 accumulation gets."""
    x, delta, w = sample(5, 7, 96, 80, seed=3)
    x, delta = x.to(half), delta.to(half)
    result = contract([(x, delta)], w, route=route)
    expected = oracle(x.to(torch.float64), delta.to(torch.float64), w)
    for name, want in zip(("kernel", "row_energy", "col_energy"), expected):
        got = getattr(result, name)
        assert got.dtype == torch.float64
        assert float((got - want).norm() / want.norm()) < 1e-5, name  # bf16 sums would be off by ~1e-2
