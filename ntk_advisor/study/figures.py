"""Matplotlib figures of profiles, placements and studies; each returns PNG bytes.

Headless (Agg), one figure per function, labelled axes and units, so each reads on its own in
the HTML report. Inputs are the plain dicts of profile.json / plan.json / validate.json /
metrics.json, never models.
"""

from __future__ import annotations

import io
import math

import numpy as np

ROLE_ORDER = ("query", "key", "value", "qkv", "attention-out", "ffn-in", "ffn-out", "other")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    return buffer.getvalue()


def _grid(modules: list[dict], value) -> tuple[np.ndarray, list[int], list[str]]:
    """(layers × roles) matrix of value(module); NaN where a layer has no module of that role."""
    layers = sorted({m["layer"] for m in modules if m.get("layer") is not None})
    roles = [r for r in ROLE_ORDER if any(m["role"] == r for m in modules if m.get("layer") is not None)]
    grid = np.full((len(layers), len(roles)), np.nan)
    for m in modules:
        if m.get("layer") is None or m["role"] not in roles:
            continue
        i, j = layers.index(m["layer"]), roles.index(m["role"])
        grid[i, j] = value(m) if np.isnan(grid[i, j]) else grid[i, j] + value(m)
    return grid, layers, roles


def _heatmap(ax, grid, layers, roles, title, label, fmt="{:.2g}", cmap="viridis"):
    image = ax.imshow(grid, aspect="auto", cmap=cmap)
    ax.set_xticks(range(len(roles)), roles, rotation=30, ha="right")
    ax.set_yticks(range(len(layers)), [f"layer {layer}" for layer in layers])
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            r, g, b, _ = image.cmap(image.norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # perceived luminance of the cell
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.figure.colorbar(image, ax=ax, label=label)


def score_heatmap(profile: dict, gradient_energy: dict[str, float] | None = None) -> bytes:
    """Share of the NTK trace over layers × module roles, next to each module's kernel-target
    alignment, or, for a profile without labels (SFT), its share of the SFT gradient's energy
    ‖G_m‖²_F (``gradient_energy``: module -> ‖G_m‖²_F; empty when the profile has none)."""
    plt = _pyplot()
    modules = profile["modules"]
    total = sum(m["trace"] for m in modules if m.get("layer") is not None) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len({m['layer'] for m in modules}) + 2.2))
    grid, layers, roles = _grid(modules, lambda m: 100 * m["trace"] / total)
    _heatmap(axes[0], grid, layers, roles, "share of the NTK trace (%)", "% of the block modules' trace", "{:.1f}")
    if gradient_energy == {}:  # an SFT profile without the gradient pass (--signal-samples 0)
        axes[1].text(0.5, 0.5, "no SFT gradient in this profile\n(profiled with --signal-samples 0)", ha="center")
        axes[1].axis("off")
    elif gradient_energy is not None:
        energy = sum(gradient_energy.get(m["name"], 0.0) for m in modules if m.get("layer") is not None)
        grid, layers, roles = _grid(modules, lambda m: 100 * gradient_energy.get(m["name"], 0.0) / (energy or 1.0))
        _heatmap(axes[1], grid, layers, roles, "share of the SFT gradient's energy ‖G‖²_F (%)",
                 "% of the block modules' ‖G‖²_F", "{:.1f}", cmap="magma")
    else:
        grid, layers, roles = _grid(modules, lambda m: m["alignment"] if m["alignment"] == m["alignment"] else 0.0)
        _heatmap(axes[1], grid, layers, roles, "kernel-target alignment", "alignment", "{:.2f}", cmap="magma")
    return _png(fig)


def spectra(profile: dict, kernels: dict, top: int = 6) -> bytes:
    """Eigenvalues (descending, log scale) of the total kernel and of the top modules by trace."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    total = np.sort(np.asarray(profile["total"]["spectrum"], dtype=float))[::-1]
    ax.semilogy(np.arange(1, len(total) + 1), np.clip(total, 1e-12, None), color="black", lw=2.5, label="total")
    ranked = sorted((m for m in profile["modules"] if m["name"] in kernels), key=lambda m: -m["trace"])[:top]
    for m in ranked:
        ev = np.sort(np.linalg.eigvalsh(kernels[m["name"]].numpy()))[::-1]
        ax.semilogy(np.arange(1, len(ev) + 1), np.clip(ev, 1e-12, None), lw=1.2, label=_short(m["name"]))
    ax.set_xlabel("eigenvalue index (descending)")
    ax.set_ylabel("eigenvalue")
    ax.set_title(f"NTK spectra on the probe sample (N = {len(total)})")
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def row_column_profiles(profile: dict, scores: dict, top: int = 4, kind: str = "alignment") -> bytes:
    """Per-row and per-column scores of the top modules, sorted, to see how peaked they are:
    ``kind`` "alignment" (the labels' kernel alignment) or "signal" (the label or SFT gradient)."""
    plt = _pyplot()
    ranked = sorted((m for m in profile["modules"] if m["name"] in scores.get(f"rows_{kind}", {})
                     and m.get("layer") is not None), key=lambda m: -m["trace"])[:top]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, group in zip(axes, (f"rows_{kind}", f"cols_{kind}")):
        for m in ranked:
            values = np.sort(scores[group][m["name"]].numpy())[::-1]
            peak = values[0] if values[0] > 0 else 1.0  # modules differ by decades: compare shapes
            ax.plot(np.arange(1, len(values) + 1) / len(values), values / peak, label=_short(m["name"]))
        ax.set_xlabel(f"fraction of {group.split('_')[0]} (sorted by score)")
        ax.set_ylabel(f"{'alignment contribution' if kind == 'alignment' else 'gradient energy'} / module's largest")
        ax.set_title(f"per-{group.split('_')[0][:-1]} scores, top {len(ranked)} block modules by trace")
        ax.legend(fontsize=7)
    return _png(fig)


def placement_map(parts: dict, method: str, shapes: dict[str, tuple[int, int]] | None, title: str) -> bytes:
    """The chosen placement drawn on the model: trained units per module over layers × roles.

    ``parts``: module -> a typed part, or a part as plan.json and recipes store it."""
    from ..inputs.models import layer_of, role_of
    from ..methods import Slices, get_method, part_from_json

    plt = _pyplot()
    typed = {name: part if hasattr(part, "units") else part_from_json(part) for name, part in parts.items()}
    modules = [{"name": name, "layer": layer_of(name), "role": role_of(name), "units": part.units}
               for name, part in typed.items()]
    if not modules or all(m["layer"] is None for m in modules):
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no block modules in this placement", ha="center")
        ax.axis("off")
        return _png(fig)
    first = next(iter(typed.values()))
    unit = ("columns" if first.axis == "cols" else "rows") if isinstance(first, Slices) else get_method(method).unit_label
    grid, layers, roles = _grid(modules, lambda m: m["units"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(layers) + 2.2))
    _heatmap(ax, grid, layers, roles, title, f"{unit} trained", "{:.0f}", cmap="Blues")
    return _png(fig)


def predicted_vs_measured(document: dict, predictor: str) -> bytes:
    """Scatter of one predictor against the study's test measure (accuracy, or completion NLL
    for SFT) on the seeds every placement ran (what ρ is computed on), one labelled point per
    placement."""
    from .summary import document_outcome

    plt = _pyplot()
    outcome = document_outcome(document)
    placements = document["placements"]
    names = list(placements)
    x = np.array([placements[n]["predictors"][predictor] for n in names], dtype=float)
    figures = [placements[n].get("common_seeds", placements[n])[outcome.test] for n in names]
    y = np.array([f["mean"] for f in figures])
    err = np.array([f["std"] if f["n"] > 1 else 0.0 for f in figures])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colours = ["tab:red" if placements[n]["kind"] == "advised" else "tab:blue" for n in names]
    finite = np.isfinite(x)
    ax.errorbar(x[finite], y[finite], yerr=np.nan_to_num(err[finite]), fmt="none", ecolor="grey", lw=1)
    ax.scatter(x[finite], y[finite], c=[c for c, f in zip(colours, finite) if f], zorder=3)
    for n, xi, yi, f in zip(names, x, y, finite):
        if f:
            ax.annotate(n, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    c = document["correlations"].get(outcome.test, {}).get(predictor, {})
    rho = c.get("spearman", math.nan)
    ci = c.get("spearman_ci", [math.nan, math.nan])
    ax.set_xlabel(f"predicted: {predictor} (from the profile)")
    ax.set_ylabel(f"measured {outcome.label} (seeds every placement ran)")
    ax.set_title(f"Spearman ρ = {rho:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] over {int(finite.sum())} placements "
                 "(red: advised)", fontsize=10)
    return _png(fig)


def correlation_bars(document: dict) -> bytes:
    """Spearman ρ of every predictor with its 95 % bootstrap interval; green where ρ has the
    useful sign (Outcome.useful_sign: positive with accuracy, negative with NLL, the other way
    for distance_to_full), the most useful at the top."""
    from .summary import document_outcome

    plt = _pyplot()
    outcome = document_outcome(document)
    table = document["correlations"][outcome.test]

    def useful(p: str) -> float:  # how strongly ρ points the useful way; undefined ρ last
        rho = table[p]["spearman"]
        return outcome.useful_sign(p) * rho if rho == rho else -2.0

    names = sorted(table, key=useful)
    rho = np.array([table[p]["spearman"] for p in names], dtype=float)
    lo = np.array([table[p]["spearman_ci"][0] for p in names], dtype=float)
    hi = np.array([table[p]["spearman_ci"][1] for p in names], dtype=float)
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.8))
    ax.barh(range(len(names)), np.nan_to_num(rho), color=["tab:green" if useful(p) > 0 else "tab:grey" for p in names])
    ax.errorbar(np.nan_to_num(rho), range(len(names)), xerr=[np.nan_to_num(rho - lo), np.nan_to_num(hi - rho)],
                fmt="none", ecolor="black", capsize=3)
    ax.set_yticks(range(len(names)), names)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(f"Spearman ρ with measured {outcome.label} (95 % bootstrap CI)")
    ax.set_title("which prediction ranks placements like fine-tuning does?")
    return _png(fig)


def loss_curves(curves: dict[str, list[float]], title: str = "training loss") -> bytes:
    """Training loss per step (moving average over 10 steps) for each run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # 20 distinct colours: a study has 12+ placements
    for name, curve in curves.items():
        values = np.asarray(curve, dtype=float)
        if len(values) >= 10:
            values = np.convolve(values, np.ones(10) / 10, mode="valid")
        ax.plot(np.arange(len(values)) + 1, values, lw=1.2, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (10-step moving average)")
    ax.set_title(title)
    if len(curves) <= 16:
        ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def lambda_sweep(rows: list[dict]) -> bytes:
    """Fine-tuned vs fully linear accuracy, linearization gap and ‖θ−θ0‖ against λ."""
    plt = _pyplot()
    lam = np.array([r["lambda"] for r in rows], dtype=float)
    positive = lam[lam > 0]
    floor = positive.min() / 10 if len(positive) else 1e-4
    x = np.where(lam > 0, lam, floor)  # λ = 0 drawn one decade left of the smallest λ
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].semilogx(x, [r["test_accuracy"] for r in rows], "o-", label="fine-tuned (cross-entropy)")
    axes[0].semilogx(x, [r["linear_model_accuracy"] for r in rows], "s--", label="linear model (kernel ridge, NTK)")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)
    axes[1].semilogx(x, [r["linearization_gap"] if r["linearization_gap"] is not None else np.nan for r in rows],
                     "o-", color="tab:red", label="linearization gap")
    axes[1].set_ylabel("linearization gap", color="tab:red")
    twin = axes[1].twinx()
    twin.semilogx(x, [r["distance_from_theta0"] for r in rows], "s--", color="tab:purple")
    twin.set_ylabel("‖θ − θ0‖", color="tab:purple")
    for ax in axes:
        ax.set_xlabel(f"proximal λ (λ = 0 drawn at {floor:g})")
    fig.suptitle("how close does the proximal term keep fine-tuning to the NTK picture?")
    return _png(fig)


def _short(name: str) -> str:
    """'bert.encoder.layer.4.intermediate.dense' -> 'L4 intermediate.dense'."""
    from ..inputs.models import layer_of

    layer = layer_of(name)
    if layer is None:
        return name
    rest = name.split(f".{layer}.", 1)[1]
    return f"L{layer} {rest}"
