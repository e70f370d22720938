"""write_report(): one self-contained HTML page (PNG figures embedded as data URIs) for a folder.

The folder kind is recognised by its contract files: profile.json (profile), validate.json
(validate study) or metrics.json (train run). The page is written atomically.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from .._io import read_json, write_text_atomically
from ..errors import ReportError
from . import figures


def folder_kind(folder: Path) -> str:
    for name, kind in (("validate.json", "validate"), ("profile.json", "profile"), ("metrics.json", "run")):
        if (folder / name).exists():
            return kind
    raise ReportError(f"'{folder}' is not a profile, validate or run folder (no profile.json, validate.json or "
                      "metrics.json): pass a folder written by ntk-advisor profile, validate or train")


def _figure(title: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><h3>{html.escape(title)}</h3><img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _profile_sections(folder: Path) -> list[str]:
    from ..advice.recommend import profiled_task
    from ..profiling.folder import load_profile

    document = read_json(folder / "profile.json")
    profile = load_profile(folder)
    s = document["settings"]
    sections = [f"<p>{html.escape(s['model'])} on {html.escape(str(s['data']))}: N = {s['samples']} probe examples, "
                f"T = {s['max_length']} tokens, output reduction {html.escape(s['reduction'])}, "
                f"head {html.escape(document['head'].get('kind', '?'))}.</p>"]
    labelled = profiled_task(s).labelled
    # SFT: each module's ‖G_m‖²_F, the sum of its row scores; {} when profiled with --signal-samples 0
    energy = None if labelled else {m: float(v.sum()) for m, v in profile.scores.get("rows_signal", {}).items()}
    sections.append(_figure("Where the kernel lives", figures.score_heatmap(document, energy),
                            "Left: each module's share of the block modules' NTK trace. Right: " + (
                                "its kernel-target alignment with the labels of the probe sample." if labelled else
                                f"its share of the SFT gradient's energy ‖G‖²_F over M = {s.get('signal_samples')} "
                                "training pairs (the signal the advised LoRA ranks follow; docs/sft.md)." if energy
                                else "empty: this profile has no SFT gradient (--signal-samples 0).")))
    sections.append(_figure("Spectra", figures.spectra(document, profile.kernels),
                            "Eigenvalues of the total kernel and of the six modules with the largest trace. A flat "
                            "spectrum is well conditioned; a steep one adapts mostly along a few directions."))
    if labelled or energy:
        scored = "alignment" if labelled else "signal"
        sections.append(_figure("Row and column scores",
                                figures.row_column_profiles(document, profile.scores, kind=scored),
                                "Per-row (output unit) and per-column (input feature) " + (
                                    "alignment contributions" if labelled else "shares of the SFT gradient's energy")
                                + ", sorted. A peaked curve means a few rows carry the module; a flat one means any "
                                "will do."))
    top = sorted(document["modules"], key=lambda m: -m["trace"])[:12]
    extra, cells = ((["alignment", "LOO acc"], lambda m: [_num(m["alignment"]), _num(m["loo_accuracy"])]) if labelled
                    else (["‖G‖²_F"], lambda m: [_num(energy.get(m["name"], math.nan))]))
    sections.append(_table(["module", "role", "trace", "κ", "effective rank", *extra],
                           [[m["name"], m["role"], m["trace"], _num(m["condition_number"]), m["effective_rank"],
                             *cells(m)] for m in top]))
    return sections


def _num(value) -> float:
    return float(value) if value is not None else math.nan


def _validate_sections(folder: Path) -> list[str]:
    from .summary import best_predictor, document_outcome

    document = read_json(folder / "validate.json")
    plan = read_json(folder / "plan.json")
    outcome = document_outcome(document)
    test, short = outcome.test, outcome.short
    placements = document["placements"]
    sections = []
    if placements:
        sections.append(_table(
            ["placement", "method", "weights", f"test {short} (mean)", "sd", "seeds", f"val {short}",
             *(p.removeprefix("objective:") for p in outcome.headline)],
            [[n, placements[n]["method"], placements[n]["weights"], placements[n][test]["mean"],
              placements[n][test]["std"], placements[n][test]["n"], placements[n][outcome.validation]["mean"],
              *(placements[n]["predictors"][p] for p in outcome.headline)] for n in document["ranking"]]))
    if document.get("correlations"):
        shown = [outcome.headline[0]]
        best = best_predictor(document)
        if best and best[0] not in shown:
            shown.append(best[0])
        for predictor in shown:
            sections.append(_figure(f"Predicted vs measured: {predictor}",
                                    figures.predicted_vs_measured(document, predictor),
                                    "Each point is one placement at the same budget; bars are the spread over "
                                    "seeds. A useful predictor puts the points in "
                                    + ("rising" if outcome.useful_sign(predictor) > 0 else "falling")
                                    + " order from left to right."))
        sections.append(_figure("Every predictor", figures.correlation_bars(document),
                                f"Spearman ρ between each predicted figure and the measured {outcome.label}, with "
                                "a percentile bootstrap interval over placements; green where ρ has the useful sign"
                                + (" (lower NLL is better, so negative for every predictor but distance_to_full)."
                                   if not outcome.higher_is_better else " (negative for distance_to_full).")))
    advised = plan["placements"].get("advised")
    if advised:
        sections.append(_figure("The advised placement on the model",
                                figures.placement_map(advised["placement"], advised["method"], None,
                                                      "advised placement"),
                                "Rows (or columns, or LoRA rank) trained in each module, over layers × roles."))
    curves = {}
    for name in placements:
        metrics = folder / "runs" / name / "seed-0" / "metrics.json"
        if metrics.exists():
            curves[name] = read_json(metrics)["loss_curve"]
    if curves:
        sections.append(_figure("Loss curves", figures.loss_curves(curves, "training loss, seed 0 of each placement"),
                                "Identical settings for every placement; only the trainable set differs."))
    if document.get("sweep"):
        sections.append(_figure("Proximal strength sweep", figures.lambda_sweep(document["sweep"]),
                                "Left: accuracy of the fine-tuned model and of its fully linear counterpart (kernel "
                                "ridge with the placement's NTK). Right: how far training moved and how non-linear "
                                "the result is."))
        sections.append(_table(["λ", "fine-tuned test acc", "linear model test acc", "linearization gap", "‖θ−θ0‖"],
                               [[r["lambda"], r["test_accuracy"], _num(r["linear_model_accuracy"]),
                                 _num(r["linearization_gap"]), r["distance_from_theta0"]] for r in document["sweep"]]))
    if (folder / "profile" / "profile.json").exists():
        sections.append("<h2>The shared profile</h2>")
        sections.extend(_profile_sections(folder / "profile"))
    return sections


def _run_sections(folder: Path) -> list[str]:
    metrics = read_json(folder / "metrics.json")
    recipe = metrics.get("recipe", {})
    test = metrics["test"]
    if "accuracy" in test:
        measured, evaluated = f"test accuracy {test['accuracy']:.4f}", ("accuracy", "loss")
    else:  # supervised fine-tuning: completion NLL (docs/sft.md)
        measured = f"test completion NLL {test['nll']:.4f} (perplexity {test['perplexity']:.2f})"
        if test.get("exact_match") is not None:
            measured += f", greedy exact match {test['exact_match']:.3f}"
        evaluated = ("nll", "perplexity")
    forgetting = metrics.get("forgetting")
    if forgetting:
        measured += (f"; forgetting: NLL on {forgetting['texts']} held-out texts ({html.escape(forgetting['source'])}) "
                     f"{forgetting['nll_theta0']:.4f} before, {forgetting['nll_after']:.4f} after")
    sections = [f"<p>{measured} after {metrics['steps']} steps; "
                f"{metrics['trainable_parameters']:,} trainable parameters.</p>"]
    sections.append(_figure("Loss curve", figures.loss_curves({"train": metrics["loss_curve"]}),
                            "Training cross-entropy per step" + ("." if "accuracy" in test else
                                                                 " (completion tokens only).")))
    sections.append(_table(["epoch", "step", *(f"val {k}" for k in evaluated), "‖θ−θ0‖"],
                           [[h["epoch"], h["step"], *(h[k] for k in evaluated), h["distance_from_theta0"]]
                            for h in metrics.get("history", [])]))
    targets = recipe.get("targets", [])
    if targets:
        placement = {t["module"]: {k: t[k] for k in ("axis", "indices", "rank") if k in t} for t in targets}
        sections.append(_figure("Placement", figures.placement_map(placement, recipe["method"], None, "trained units"),
                                "What this run trained, over layers × roles."))
    return sections


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
          "figcaption{color:#555;font-size:13px}")


def write_report(folder: str | Path, out: str | Path) -> dict:
    """Write the page; returns {"kind", "figures"}."""
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise ReportError(f"'{folder}' is not a folder: pass a profile, validate or run folder")
    kind = folder_kind(folder)
    sections = {"profile": _profile_sections, "validate": _validate_sections, "run": _run_sections}[kind](folder)
    title = f"ntk-advisor {kind} report: {folder.name}"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>")
    write_text_atomically(out, page)
    return {"kind": kind, "figures": page.count("<img ")}
