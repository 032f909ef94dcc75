"""A faster kernel for MACE's edge tensor product, used in the committee MD (float32).

MACE's interaction blocks combine every edge's sender features with the edge's spherical
harmonics through an e3nn ``TensorProduct`` in ``'uvu'`` mode with per-edge weights from the
radial network (``interaction.conv_tp``). e3nn evaluates it path by path, as a few dozen
small operations, forward and (for the forces) backward. The same bilinear map, per edge and
channel ``u``, is

    y[k, u] = w[p(k), u] · Σ_a M[k, a] x1[a, u],   M[k, a] = Σ_b Y[b] C[b, k, a],

with ``a`` over one channel's sender components (all its irreps), ``b`` over the spherical
harmonics ``Y``, ``k`` over one channel's output components (all paths), ``p(k)`` the path that
writes ``k`` and ``C`` every path's Clebsch–Gordan coefficients with e3nn's normalisation and
path weights. :class:`ChannelwiseTensorProduct` reads ``C`` off the e3nn module itself (its
output for unit inputs, so it follows whatever normalisation the model was built with), checks
itself against the module on random inputs and then evaluates the map as one matrix product
(``M``), one batched matrix product over the edges and one elementwise product with the
weights, in e3nn's output layout: the rest of the model is untouched. Same map, other
rounding (float32: outputs within ~2e-6 of e3nn's).

Measured (2026-12-06, ``benchmarks/model_call.py`` and docs/method.md, "A faster edge tensor
product"): with freed memory kept for reuse (:func:`palirs_data.dynamics.reuse_freed_memory`)
one member's energy and forces for 36 methanol replicas take 23.5 ms instead of e3nn's 27.8
(float32, one thread); without it the two are level, both paying for fresh pages. In float64
the batched product gained nothing, so :func:`palirs_data.committee.load_model` swaps it in
for float32 only, the precision of the MD.
"""

from __future__ import annotations

import copy

import torch

#: Largest difference from e3nn's output the check accepts, relative to the output's scale.
CHECK_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


class ChannelwiseTensorProduct(torch.nn.Module):
    """An e3nn ``TensorProduct`` (``'uvu'``, per-edge weights, one path per output irrep, one
    multiplicity for the first input and 1 for the second) as three large operations.

    Called as the e3nn module is: ``forward(x1, x2, weights)`` with ``x1`` (E,
    irreps_in1.dim), ``x2`` (E, irreps_in2.dim) and ``weights`` (E, weight_numel), returning
    (E, irreps_out.dim). Raises ``ValueError`` for a product of another form.
    """

    def __init__(self, tp: torch.nn.Module) -> None:
        super().__init__()
        ins = list(tp.instructions)
        muls = {mul for mul, _ in tp.irreps_in1}
        if tp.shared_weights or tp.internal_weights:
            raise ValueError("the product has no per-edge weights")
        if any(i.connection_mode != "uvu" or not i.has_weight for i in ins):
            raise ValueError("the product has paths other than weighted 'uvu'")
        if len(muls) != 1 or any(mul != 1 for mul, _ in tp.irreps_in2):
            raise ValueError("the product's inputs have other multiplicities")
        if [i.i_out for i in ins] != list(range(len(tp.irreps_out))):
            raise ValueError("the product has not one path per output irrep, in order")
        u_mul = muls.pop()
        d_in = [ir.dim for _, ir in tp.irreps_in1]
        d_out = [ir.dim for _, ir in tp.irreps_out]
        n_a, n_b, n_k, n_p = sum(d_in), tp.irreps_in2.dim, sum(d_out), len(ins)
        off_in = [u_mul * sum(d_in[:i]) for i in range(len(d_in))]
        off_k = [sum(d_out[:s]) for s in range(len(d_out))]
        unit = _unit_outputs(tp, n_a, n_b, n_p, u_mul,
                             [off_in[i] + m for i in range(len(d_in)) for m in range(d_in[i])])
        c = torch.zeros(n_b, n_k, n_a, dtype=torch.float64)
        for s, d in enumerate(d_out):  # path s writes output irrep s
            for m in range(d):
                c[:, off_k[s] + m] = unit[:, :, s, u_mul * off_k[s] + m].T
        self.u_mul, self.n_a, self.n_k, self.n_p = u_mul, n_a, n_k, n_p
        self.register_buffer("coefficients", c.reshape(n_b, n_k * n_a))
        # x1's blocks (u, m) per irrep -> (a, u); y (k, u) -> e3nn's blocks (u, m) per irrep
        self.register_buffer("perm_in", torch.tensor(
            [off_in[i] + u * d_in[i] + m for i in range(len(d_in)) for m in range(d_in[i])
             for u in range(u_mul)]))
        self.register_buffer("path_of_k", torch.tensor(
            [s for s, d in enumerate(d_out) for _ in range(d)]))
        self.register_buffer("perm_out", torch.tensor(
            [(off_k[s] + m) * u_mul + u for s, d in enumerate(d_out) for u in range(u_mul)
             for m in range(d)]))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weights: torch.Tensor
                ) -> torch.Tensor:
        n = x1.shape[0]
        x1 = x1.index_select(1, self.perm_in).view(n, self.n_a, self.u_mul)
        m = (x2 @ self.coefficients).view(n, self.n_k, self.n_a)
        y = m * x1 if self.n_a == 1 else torch.bmm(m, x1)
        w = weights.view(n, self.n_p, self.u_mul).index_select(1, self.path_of_k)
        return (y * w).reshape(n, -1).index_select(1, self.perm_out)


def _unit_outputs(tp: torch.nn.Module, n_a: int, n_b: int, n_p: int, u_mul: int,
                  a_position: list[int]) -> torch.Tensor:
    """e3nn's output (float64) with channel 0's sender component a, harmonic b and path p's
    weight set to 1, everything else 0: shape (a, b, p, irreps_out.dim)."""
    a, b, p = (g.flatten() for g in torch.meshgrid(
        torch.arange(n_a), torch.arange(n_b), torch.arange(n_p), indexing="ij"))
    rows = torch.arange(len(a))
    x1 = torch.zeros(len(a), tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.zeros(len(a), n_b, dtype=torch.float64)
    w = torch.zeros(len(a), tp.weight_numel, dtype=torch.float64)
    x1[rows, torch.tensor(a_position)[a]] = 1.0
    x2[rows, b] = 1.0
    w[rows, p * u_mul] = 1.0
    probe = copy.deepcopy(tp).to(device="cpu", dtype=torch.float64)
    with torch.no_grad():
        return probe(x1, x2, w).view(n_a, n_b, n_p, -1)


def matches(tp: torch.nn.Module, fast: torch.nn.Module, dtype: torch.dtype,
            device: torch.device | str = "cpu") -> float:
    """Largest difference between ``fast`` and e3nn's ``tp`` on random inputs, relative to
    the scale of e3nn's output."""
    gen = torch.Generator().manual_seed(0)
    x1, x2, w = (torch.randn(32, d, generator=gen, dtype=dtype).to(device)
                 for d in (tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel))
    with torch.no_grad():
        want, got = tp(x1, x2, w), fast(x1, x2, w)
    return float((want - got).abs().max() / want.abs().max().clamp_min(1.0))


def accelerate(model: torch.nn.Module) -> int:
    """Swap :class:`ChannelwiseTensorProduct` in for every interaction's ``conv_tp`` of the MACE
    ``model`` that it can express and that matches e3nn's (:data:`CHECK_TOLERANCE`, in the
    model's dtype and on its device); others keep e3nn's. Returns how many were swapped."""
    first = next(model.parameters())
    swapped = 0
    for block in getattr(model, "interactions", []):
        tp = getattr(block, "conv_tp", None)
        if tp is None or isinstance(tp, ChannelwiseTensorProduct) or hasattr(block,
                                                                             "conv_fusion"):
            continue
        try:
            fast = ChannelwiseTensorProduct(tp).to(dtype=first.dtype, device=first.device)
        except (ValueError, AttributeError):
            continue
        if matches(tp, fast, first.dtype, first.device) <= CHECK_TOLERANCE.get(first.dtype,
                                                                                1e-5):
            block.conv_tp = fast
            swapped += 1
    return swapped
