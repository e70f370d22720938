"""The linearization gap against closed forms."""

from __future__ import annotations

import torch

from ntk_advisor.ntk.linearization import linearization_gap


class LinearInParams(torch.nn.Module):
    """f(x) = W x: linear in W, so its linearization is exact and the gap is 0."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w.T


class Quadratic(torch.nn.Module):
    """f(x) = (a·x)² with scalar output: f_lin error is exactly (Δa·x)²."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))

    def forward(self, x):
        return ((x @ self.a) ** 2)[:, None]


def test_gap_is_zero_for_a_model_linear_in_its_parameters():
    torch.manual_seed(0)
    model = LinearInParams()
    x = torch.randn(10, 4, dtype=torch.float64)
    theta0 = {"w": model.w.detach().clone()}
    theta = {"w": theta0["w"] + torch.randn(3, 4, dtype=torch.float64)}
    result = linearization_gap(model, theta, theta0, {"x": x}, batch_size=3)
    assert result["linearization_gap"] < 1e-12 and result["output_change"] > 0


def test_gap_matches_the_closed_form_of_a_quadratic():
    torch.manual_seed(1)
    model = Quadratic()
    x = torch.randn(7, 4, dtype=torch.float64)
    a0 = model.a.detach().clone()
    delta = 0.1 * torch.randn(4, dtype=torch.float64)
    result = linearization_gap(model, {"a": a0 + delta}, {"a": a0}, {"x": x})
    change = ((x @ (a0 + delta)) ** 2 - (x @ a0) ** 2).abs().mean()
    residual = ((x @ delta) ** 2).mean()  # f(a0+Δ) − f(a0) − 2(a0·x)(Δ·x) = (Δ·x)²
    assert abs(result["linearization_gap"] - float(residual / change)) < 1e-12
