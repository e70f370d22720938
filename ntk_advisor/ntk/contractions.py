"""Contractions of captured activations x and output gradients δ into one module's kernel.

Notation (docs/method.md §1-4): R kernel rows, T tokens, a Linear module y = W x + b with
W[d_out, d_in], P = d_out·d_in. For kernel row r, δ_{r,t} = ∂f_r/∂y_t and

    g_r = ∂f_r/∂W = Σ_t δ_{r,t} x_{r,t}ᵀ                       (d_out, d_in)
    K[r, q] = ⟨g_r, g_q⟩ = Σ_{t,s} (x_{r,t}·x_{q,s}) (δ_{r,t}·δ_{q,s})

Two exact routes, with their cost per module and pass:

=============  ===========================================  ==================================
route          flops (multiply-adds)                        wins when
=============  ===========================================  ==================================
per-example    R·T·P (form g_r) + R²·P (inner products)     T is large or d_in·d_out moderate
gram           R²·T²·(d_in + d_out) (token Grams)           R·T is small against d_in·d_out
=============  ===========================================  ==================================

Both also return row and column scores (docs/method.md §4): energies e_i = Σ_r ‖g_r[i,:]‖² and
label-alignment numerators a_i = Σ_k ‖Σ_r w_{k,r} g_r[i,:]‖², with target weights w (k×R)
(``targets.target_weights``). Σ_i e_i = tr K and Σ_i a_i = ⟨K, wᵀw⟩, for rows and columns.

T counts only *active* tokens: a token whose δ is zero in every row adds nothing to any g_r
(padding shared by all rows; every token but the pooled one in a BERT model's last layer),
so `active_tokens` drops it before a route is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModuleKernel:
    """One module's kernel (R×R, float64), its row (d_out) / column (d_in) scores, and the
    route that contracted it (of its first pass, for kernels summed over passes)."""

    kernel: torch.Tensor
    row_energy: torch.Tensor
    col_energy: torch.Tensor
    row_alignment: torch.Tensor
    col_alignment: torch.Tensor
    route: str = ""

    def add_(self, other: "ModuleKernel") -> "ModuleKernel":
        for field in ("kernel", "row_energy", "col_energy", "row_alignment", "col_alignment"):
            getattr(self, field).add_(getattr(other, field))
        return self

    def to(self, device: torch.device | str) -> ModuleKernel:
        """The same kernel and scores on ``device`` (the profile keeps them on the CPU)."""
        return ModuleKernel(*(getattr(self, field).to(device) for field in
                              ("kernel", "row_energy", "col_energy", "row_alignment", "col_alignment")), self.route)

    def transposed(self) -> "ModuleKernel":
        """The same kernel with rows and columns swapped (the module of Wᵀ)."""
        return ModuleKernel(self.kernel, self.col_energy, self.row_energy, self.col_alignment, self.row_alignment,
                            self.route)


class GradientBuffer:
    """One reusable buffer for the per-example gradients g of every module and pass.

    Why: g is R·P floats (151 MB for a MiniLM FFN weight at R=64). A fresh tensor that size
    is fresh pages, and the first-touch page faults land inside the BLAS call; reused, the
    buffer faults once. ``max_bytes`` caps it and g is formed a block at a time: blocks of
    8 and 32 MiB ran as fast as one 151 MB block (paired runs of the whole minilm-l6
    profile: 0.96× and 0.98×), 2 MiB blocks 1.01×.
    """

    def __init__(self, max_bytes: int = 32 * 2**20):
        self.max_bytes = max_bytes
        self._storage: torch.Tensor | None = None

    def view(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
        device = torch.device(device)
        numel = 1
        for size in shape:
            numel *= size
        storage = self._storage
        if storage is None or storage.dtype != dtype or storage.device != device or storage.numel() < numel:
            self._storage = storage = None  # release the old buffer before the new one is allocated
            self._storage = torch.empty(numel, dtype=dtype, device=device)
        return self._storage[:numel].view(shape)


HALF = (torch.bfloat16, torch.float16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a module's captures are contracted in: float32 for half-precision weights,
    whose 8 or 11 significant bits would lose the sums over tokens and features, else the
    weights' own dtype (float64 models stay exact)."""
    return torch.float32 if dtype in HALF else dtype


Parts = list[tuple[torch.Tensor, torch.Tensor]]
"""Consecutive blocks of kernel rows, each (x (n_b, T_b, d_in), δ (n_b, T_b, d_out)): rows of
similar length share a block padded only to its own T_b (`kernels.length_buckets`)."""


def active_tokens(x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the token positions whose δ is zero in every row (they add nothing to g_r).
    NaN counts as nonzero, so an overflow reaches the kernel and the caller's check."""
    active = delta.ne(0).any(dim=2).any(dim=0)
    if bool(active.all()):
        return x, delta
    if not bool(active.any()):  # the module does not reach the outputs: one zero token keeps shapes valid
        active[0] = True
    return x[:, active], delta[:, active]


def token_gram_energies(parts: Parts) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column energies without forming g, from each row's own token Grams:

    e_i = Σ_r δ_r[:,i]ᵀ (x_r x_rᵀ) δ_r[:,i],   c_j = Σ_r x_r[:,j]ᵀ (δ_r δ_rᵀ) x_r[:,j].
    Cost 2·Σ_b n_b·T_b²·(d_in + d_out).
    """
    rows, cols = 0, 0
    for x, delta in parts:
        x_self = torch.bmm(x, x.transpose(1, 2))
        d_self = torch.bmm(delta, delta.transpose(1, 2))
        rows = rows + (torch.bmm(x_self, delta) * delta).sum((0, 1))
        cols = cols + (torch.bmm(d_self, x) * x).sum((0, 1))
    return rows, cols


SLICE_FLOATS = 16384  # columns of F per slice: 4 MiB at R = 64, within L2 + L3 (fastest of 8k-128k measured)


def per_example_route(parts: Parts, target_weights: torch.Tensor, buffer: GradientBuffer | None = None) -> ModuleKernel:
    """Row blocks of x and δ -> ModuleKernel via g_r = Σ_t δ_{r,t} x_{r,t}ᵀ.

    g (R, d_out, d_in) is written into ``buffer`` a block along the longer side of W at a
    time. Over each block F (R×m), K accumulates F Fᵀ and the alignment takes w F (k·R·m), a
    slice of ``SLICE_FLOATS`` columns at a time: w F alone only streams F from memory (a
    third of the time of F Fᵀ on the MiniLM FFN), so it reads each slice while F Fᵀ has just
    brought it into cache. Energies come from `token_gram_energies` while that is cheaper
    (`energies_from_grams`), else from the same slices. Contracted in the inputs' dtype,
    each block's K added in float64. Memory: the buffer plus R², k·m, R·``SLICE_FLOATS`` and
    d_out + d_in scores.
    """
    x0, d0 = parts[0]
    if x0.shape[-1] > d0.shape[-1]:  # block along d_in instead: the same kernel, rows and columns swapped
        return per_example_route([(delta, x) for x, delta in parts], target_weights, buffer).transposed()
    buffer = buffer or GradientBuffer()
    R, d_in, d_out, dtype = sum(x.shape[0] for x, _ in parts), x0.shape[-1], d0.shape[-1], x0.dtype
    f64, device = torch.float64, x0.device
    weights = target_weights.to(dtype)
    step = max(1, min(d_out, buffer.max_bytes // (R * d_in * x0.element_size())))
    from_grams = energies_from_grams(parts)
    kernel = torch.zeros(R, R, dtype=f64, device=device)
    scores = {name: torch.zeros(size, dtype=f64, device=device) for name, size in
              (("row_energy", d_out), ("col_energy", d_in), ("row_alignment", d_out), ("col_alignment", d_in))}
    squares = None if from_grams else torch.empty(R, min(SLICE_FLOATS, step * d_in), dtype=dtype,
                                                      device=device)
    for start in range(0, d_out, step):
        width = min(step, d_out - start)
        g = buffer.view((R, width, d_in), dtype, device)
        offset = 0
        for x, delta in parts:
            torch.bmm(delta[..., start:start + width].transpose(1, 2), x, out=g[offset:offset + x.shape[0]])
            offset += x.shape[0]
        flat = g.view(R, -1)
        block_kernel = torch.zeros(R, R, dtype=dtype, device=device)
        projected = torch.empty(weights.shape[0], flat.shape[1], dtype=dtype, device=device)
        energy = None if from_grams else torch.empty(flat.shape[1], dtype=dtype, device=device)
        for column in range(0, flat.shape[1], SLICE_FLOATS):
            columns = slice(column, column + SLICE_FLOATS)
            piece = flat[:, columns]
            block_kernel.addmm_(piece, piece.T)
            torch.mm(weights, piece, out=projected[:, columns])
            if energy is not None:
                torch.sum(torch.mul(piece, piece, out=squares[:, :piece.shape[1]]), 0, out=energy[columns])
        kernel += block_kernel
        rows = slice(start, start + width)
        per_weight = {"alignment": projected.view(-1, width, d_in).square_().sum(0)}
        if energy is not None:
            per_weight["energy"] = energy.view(width, d_in)
        for kind, values in per_weight.items():
            scores["row_" + kind][rows] = values.sum(1)
            scores["col_" + kind] += values.sum(0)
    if from_grams:
        row_energy, col_energy = token_gram_energies(parts)
        scores["row_energy"], scores["col_energy"] = row_energy.to(f64), col_energy.to(f64)
    return ModuleKernel(kernel, **scores)


GEMM_OVER_STREAMING = 60


def energies_from_grams(parts: Parts) -> bool:
    """Whether `token_gram_energies` (4·Σ_b n_b·T_b²·(d_in+d_out) flops, as BLAS products) beats
    squaring g's R·P entries from cache. This machine multiplies matrices about
    ``GEMM_OVER_STREAMING`` times faster, in flops, than it squares and sums cached slices
    (187 GFLOP/s against 64×16384 floats in 0.6 ms), which puts the crossover for minilm-l6
    near T = 55-65: Grams at the usual T ≤ 64, slices beyond."""
    x0, d0 = parts[0]
    rows = sum(x.shape[0] for x, _ in parts)
    gram_flops = 4 * sum(x.shape[0] * x.shape[1] ** 2 for x, _ in parts) * (x0.shape[-1] + d0.shape[-1])
    return gram_flops < GEMM_OVER_STREAMING * rows * x0.shape[-1] * d0.shape[-1]


def gram_route(parts: Parts, target_weights: torch.Tensor, buffer: GradientBuffer | None = None) -> ModuleKernel:
    """Same result as `per_example_route` from token Grams, never forming g_r.

    For row blocks b, c: K[b,c][r,q] = Σ_{t,s} X[r,t,q,s] D[r,t,q,s] with X, D their token
    Grams, (n_b·T_b)×(n_c·T_c); the energies come from `token_gram_energies`; the alignment
    needs only k matrices Σ_r w_{k,r} g_r.
    """
    R, dtype = sum(x.shape[0] for x, _ in parts), parts[0][0].dtype
    offsets = [0]
    for x, _ in parts:
        offsets.append(offsets[-1] + x.shape[0])
    kernel = torch.empty(R, R, dtype=dtype, device=parts[0][0].device)
    for b, (xb, db) in enumerate(parts):
        for c in range(b, len(parts)):
            xc, dc = parts[c]
            shape = (xb.shape[0], xb.shape[1], xc.shape[0], xc.shape[1])
            x_gram = (xb.flatten(0, 1) @ xc.flatten(0, 1).T).view(shape)
            d_gram = (db.flatten(0, 1) @ dc.flatten(0, 1).T).view(shape)
            block = (x_gram * d_gram).sum((1, 3))
            kernel[offsets[b]:offsets[b + 1], offsets[c]:offsets[c + 1]] = block
            kernel[offsets[c]:offsets[c + 1], offsets[b]:offsets[b + 1]] = block.T
    row_e, col_e = token_gram_energies(parts)
    weights = target_weights.to(dtype)
    projected = sum(projection(weights[:, offsets[b]:offsets[b + 1]], db, xb) for b, (xb, db) in enumerate(parts))
    squared = projected.square()
    row_a, col_a = squared.sum((0, 2)), squared.sum((0, 1))
    return ModuleKernel(*(t.to(torch.float64) for t in (kernel, row_e, col_e, row_a, col_a)))


def projection(w: torch.Tensor, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_r w_{k,r} g_r = Σ_{r,t} w_{k,r} δ_{r,t} x_{r,t}ᵀ, one (d_out×R·T)@(R·T×d_in) product per k."""
    R, T, d_out = delta.shape
    flat_x = x.reshape(R * T, -1)
    return torch.stack([(delta * w_k[:, None, None]).reshape(R * T, d_out).T @ flat_x for w_k in w])


def from_gradients(grads: torch.Tensor, target_weights: torch.Tensor) -> ModuleKernel:
    """Kernel and scores from materialized per-row gradients (the Jacobian route).

    grads: (R, d_out, d_in); target_weights: (k, R). Cost R²·P + k·R·P flops, R·P memory.
    """
    flat = grads.reshape(grads.shape[0], -1)
    squared = grads.square()
    projected = torch.einsum("kr,rij->kij", target_weights, grads).square()
    return ModuleKernel(flat @ flat.T, squared.sum((0, 2)), squared.sum((0, 1)),
                        projected.sum((0, 2)), projected.sum((0, 1)))


def route_costs(rows: int, tokens: float, d_out: int, d_in: int, targets: int = 1) -> dict[str, float]:
    """Multiply-adds of the two contractions for one module and pass, scores included;
    ``tokens`` is the mean per row, so rows·tokens counts every token of every block, and
    ``targets`` is k, the rows of the target weights.

    per-example: form g (R·T·P), K (R²·P), energies (R·P), alignment (k·R·P).
    gram: token Grams (R²·T²·(d_in+d_out)), energies (2·R·T²·(d_in+d_out)), alignment (k·R·T·P).
    """
    params = d_out * d_in
    return {
        "per-example": rows * tokens * params + rows * rows * params + (1 + targets) * rows * params,
        "gram": (rows + 2) * rows * tokens * tokens * (d_in + d_out) + targets * rows * tokens * params,
    }


def choose_route(rows: int, tokens: float, d_out: int, d_in: int, max_gradient_bytes: float = 2**30,
                 targets: int = 1) -> str:
    """The cheaper route by flops, unless per-example blocks would not fit in memory.

    The Gram route runs as a few large square matrix products, which BLAS executes more
    efficiently than the per-example route's batched thin ones; a 1.2× flop allowance
    matches the crossover measured on 2 CPU cores (benchmarks/bench_profile.py, T=8..64).
    """
    costs = route_costs(rows, tokens, d_out, d_in, targets)
    if rows * min(d_in, d_out) * 8 > max_gradient_bytes:  # one block row no longer fits
        return "gram"
    return "per-example" if costs["per-example"] <= 1.2 * costs["gram"] else "gram"


ROUTES = {"per-example": per_example_route, "gram": gram_route}


def contract(parts: Parts, target_weights: torch.Tensor, route: str = "auto",
             buffer: GradientBuffer | None = None) -> ModuleKernel:
    """One module and pass: drop each block's inactive tokens, pick the route by cost unless
    ``route`` names one, contract in `accumulation_dtype` of the captures, return float64."""
    work = accumulation_dtype(parts[0][0].dtype)
    parts = [active_tokens(x.to(work), delta.to(work)) for x, delta in parts]
    rows = sum(x.shape[0] for x, _ in parts)
    tokens = sum(x.shape[0] * x.shape[1] for x, _ in parts) / rows
    x0, d0 = parts[0]
    chosen = route if route != "auto" else choose_route(rows, tokens, d0.shape[-1], x0.shape[-1],
                                                        targets=target_weights.shape[0])
    result = ROUTES[chosen](parts, target_weights, buffer)
    result.route = chosen
    return result
