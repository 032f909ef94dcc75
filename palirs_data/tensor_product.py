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

MACE's interaction blocks then sum the products over each atom's incoming edges. They take a
kernel that does both (their ``conv_fusion`` hook), and :class:`ChannelwiseConvolution` is
one: the layout changes move to the atoms' rows, and in evaluation a custom backward
recomputes each block of edges' intermediates instead of keeping the whole batch's. The
product basis that follows, MACE's symmetric contraction, gets
:class:`ElementwiseSymmetricContraction`: each element's weights folded into the
Clebsch–Gordan tensors once, instead of for every atom at every call.

Measured (2026-12-06, same setting, ``benchmarks/model_call.py``, one member in six
interleaved rounds, median ms): e3nn and MACE as loaded 28.9, the product alone 25.3, the
fused convolution 22.8, the convolution and the folded contraction (what the MD uses) 19.9.
Committee MD at 72 replicas (``benchmarks/md_throughput.py``, two runs): 1.28–1.30× the
product alone, 26.4–26.6× the ASE way's best split and 1.63–1.71× TorchSim with MACE's own
modules (docs/method.md, "A fused convolution and a folded contraction").
"""

from __future__ import annotations

import copy
import inspect

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
        return self.channelwise(x1.index_select(1, self.perm_in), x2, weights
                                ).index_select(1, self.perm_out)

    def channelwise(self, x1: torch.Tensor, x2: torch.Tensor, weights: torch.Tensor
                    ) -> torch.Tensor:
        """The map with ``x1`` already in (a, u) layout; the output in (k, u) layout."""
        n = x1.shape[0]
        m = (x2 @ self.coefficients).view(n, self.n_k, self.n_a)
        x1 = x1.view(n, self.n_a, self.u_mul)
        y = m * x1 if self.n_a == 1 else torch.bmm(m, x1)
        w = weights.view(n, self.n_p, self.u_mul).index_select(1, self.path_of_k)
        return (y * w).view(n, -1)


class ChannelwiseConvolution(ChannelwiseTensorProduct):
    """The edge product and the sum of the messages over each atom's edges, in one step.

    MACE's interaction blocks sum the product's output over the edges into each receiving
    atom (``scatter_sum``) and offer a hook for a kernel that does both: with the attribute
    ``conv_fusion`` set, a block calls ``conv_tp(node_feats, edge_attrs, weights,
    edge_index)`` and takes its output as the messages per atom (cuequivariance and
    openequivariance use it). This module is such a kernel, with the map of
    :class:`ChannelwiseTensorProduct`:

    * the layouts change on the atoms' rows, not the edges' (five times fewer for methanol);
    * in evaluation (the MD) a custom backward recomputes each block of :data:`EDGE_CHUNK`
      edges' intermediates instead of keeping the whole batch's (a few MiB, more than a
      core's cache) from forward to backward: the same arithmetic, less memory traffic. It
      is differentiable once (forces), not twice;
    * in training mode with gradients on, it falls back to the composite, twice
      differentiable operations.
    """

    def forward(self, node_feats: torch.Tensor, edge_attrs: torch.Tensor,
                weights: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = node_feats.index_select(1, self.perm_in)
        sender, receiver = edge_index[0], edge_index[1]
        if self.training and torch.is_grad_enabled():
            y = self.channelwise(x.index_select(0, sender), edge_attrs, weights)
            messages = y.new_zeros(x.shape[0], y.shape[1]).index_add_(0, receiver, y)
        else:
            messages = _ChunkedConvolution.apply(
                x, edge_attrs, weights, sender, receiver, self.coefficients, self.path_of_k,
                (self.n_a, self.n_k, self.n_p, self.u_mul))
        return messages.index_select(1, self.perm_out)


#: Edges per block in :class:`ChannelwiseConvolution`'s evaluation kernel. One block's
#: largest intermediates, (256, 21 × 32) in float32 for the demo's second interaction, are
#: 0.7 MB, so the few a block needs stay in a core's 2 MiB cache; measured (2026-12-06,
#: methanol × 36, one member, float32, one thread, median of six): 128, 256 and 512 edges
#: within 1 % of each other and 4 % faster than one block of all 1080 edges.
EDGE_CHUNK = 256


class _ChunkedConvolution(torch.autograd.Function):
    """messages[i, (k, u)] = Σ over edges e into i of w[e, p(k), u] Σ_a M_e[k, a] x[s(e), a, u],
    M_e = Y_e C, block by block over the edges; backward recomputes each block."""

    @staticmethod
    def forward(ctx, x, edge_attrs, weights, sender, receiver, coefficients, path_of_k, dims):
        n_a, n_k, n_p, u_mul = dims
        messages = x.new_zeros(x.shape[0], n_k * u_mul)
        for block in _blocks(edge_attrs.shape[0]):
            m, x1, w = _block_terms(x, edge_attrs, weights, sender, coefficients, path_of_k,
                                    dims, block)
            y = m * x1 if n_a == 1 else torch.bmm(m, x1)
            messages.index_add_(0, receiver[block], y.mul_(w).view(len(y), -1))
        ctx.save_for_backward(x, edge_attrs, weights, sender, receiver, coefficients,
                              path_of_k)
        ctx.dims = dims
        return messages

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_messages):
        x, edge_attrs, weights, sender, receiver, coefficients, path_of_k = ctx.saved_tensors
        n_a, n_k, n_p, u_mul = dims = ctx.dims
        grad_x = torch.zeros_like(x)
        grad_attrs = torch.empty_like(edge_attrs)
        grad_weights = torch.empty_like(weights)
        for block in _blocks(edge_attrs.shape[0]):
            m, x1, w = _block_terms(x, edge_attrs, weights, sender, coefficients, path_of_k,
                                    dims, block)
            n = len(m)
            g = grad_messages.index_select(0, receiver[block]).view(n, n_k, u_mul)
            y = m * x1 if n_a == 1 else torch.bmm(m, x1)
            grad_weights[block] = y.new_zeros(n, n_p, u_mul).index_add_(
                1, path_of_k, y.mul_(g)).view(n, -1)
            g.mul_(w)
            if n_a == 1:
                grad_m, grad_x1 = (g * x1).sum(2, keepdim=True), (g * m).sum(1)
            else:
                grad_m, grad_x1 = torch.bmm(g, x1.transpose(1, 2)), torch.bmm(
                    m.transpose(1, 2), g)
            torch.mm(grad_m.reshape(n, -1), coefficients.t(), out=grad_attrs[block])
            grad_x.index_add_(0, sender[block], grad_x1.reshape(n, -1))
        return grad_x, grad_attrs, grad_weights, None, None, None, None, None


def _blocks(n_edges: int):
    return (slice(start, min(n_edges, start + EDGE_CHUNK))
            for start in range(0, n_edges, EDGE_CHUNK))


def _block_terms(x, edge_attrs, weights, sender, coefficients, path_of_k, dims, block):
    """One block of edges: M (n, k, a), the senders' features (n, a, u), weights (n, k, u)."""
    n_a, n_k, n_p, u_mul = dims
    n = block.stop - block.start
    m = (edge_attrs[block] @ coefficients).view(n, n_k, n_a)
    x1 = x.index_select(0, sender[block]).view(n, n_a, u_mul)
    w = weights[block].view(n, n_p, u_mul).index_select(1, path_of_k)
    return m, x1, w


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
    the scale of e3nn's output. A :class:`ChannelwiseConvolution` is compared with e3nn's
    product summed over a random graph's edges (more than one block of them), in values and
    in the gradients for a random output gradient, in evaluation mode (the MD's kernel)."""
    gen = torch.Generator().manual_seed(0)
    if not isinstance(fast, ChannelwiseConvolution):
        x1, x2, w = (torch.randn(32, d, generator=gen, dtype=dtype).to(device)
                     for d in (tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel))
        with torch.no_grad():
            want, got = tp(x1, x2, w), fast(x1, x2, w)
        return float((want - got).abs().max() / want.abs().max().clamp_min(1.0))
    n_nodes, n_edges = 9, EDGE_CHUNK + 44
    x, x2, w = (torch.randn(n, d, generator=gen, dtype=dtype).to(device).requires_grad_()
                for n, d in ((n_nodes, tp.irreps_in1.dim), (n_edges, tp.irreps_in2.dim),
                             (n_edges, tp.weight_numel)))
    edge_index = torch.randint(n_nodes, (2, n_edges), generator=gen).to(device)
    was_training = fast.training
    fast.eval()
    with torch.enable_grad():
        mji = tp(x[edge_index[0]], x2, w)
        want = mji.new_zeros(n_nodes, mji.shape[1]).index_add(0, edge_index[1], mji)
        got = fast(x, x2, w, edge_index)
        grad = torch.randn(want.shape, generator=gen, dtype=dtype).to(device)
        pairs = [(want, got)] + list(zip(torch.autograd.grad(want, (x, x2, w), grad),
                                         torch.autograd.grad(got, (x, x2, w), grad)))
    fast.train(was_training)
    return max(float((a - b).abs().max() / a.abs().max().clamp_min(1.0))
               for a, b in ((a.detach(), b.detach()) for a, b in pairs))


def _honours_fusion(block: torch.nn.Module) -> bool:
    """Whether the block hands the whole convolution to ``conv_tp`` when it has a
    ``conv_fusion`` attribute: its forward checks for it (mace-torch 0.3.16's interaction
    blocks), or calls a ``convolve_messages`` method that does (the layout of later MACE
    sources). A block that does neither keeps the product alone: correct, only slower."""
    try:
        forward = inspect.getsource(type(block).forward)
        if "conv_fusion" in forward:
            return True
        helper = getattr(type(block), "convolve_messages", None)
        return (helper is not None and "self.convolve_messages(" in forward
                and "conv_fusion" in inspect.getsource(helper))
    except (OSError, TypeError):
        return False


class ElementwiseSymmetricContraction(torch.nn.Module):
    """MACE's symmetric contraction (the product basis) with each element's weights folded in.

    Per atom of element z and channel c, MACE's ``SymmetricContraction`` evaluates a
    polynomial of the atom's features x (one channel's spherical components) of degree up to
    the correlation order ν, in Horner's form, last index first:

        out = (...((T_ν · x) + T_{ν-1}) · x ... + T_1) · x,
        T_n[z, c] = Σ_k U_n[..., k] W_n[z, k, c],

    with U_n the generalised Clebsch–Gordan tensors and W_n the learnt weights. MACE contracts
    U with W for every atom and call (the one-hot element attributes select W). This module
    contracts them once per element (in float64, then in the model's dtype) and evaluates the
    polynomial for the atoms of each element together: one batched matrix product over the
    channels, then elementwise products and sums. Same polynomial, other rounding.

    In training mode, or for element attributes that are not one-hot, it calls MACE's module.
    The folded tensors are rebuilt when the weights change in place (an optimiser step); they
    are buffers left out of the state dict, which keeps MACE's own weights (under
    ``original``).
    """

    def __init__(self, contraction: torch.nn.Module) -> None:
        super().__init__()
        parts = []
        for con in contraction.contractions:
            corr = int(con.correlation)
            if corr < 1 or not hasattr(con, "weights_max"):
                raise ValueError("not a MACE symmetric contraction")
            n_ell = int(con.U_tensors(1).shape[-2])
            n_out = con.U_tensors(1).numel() // (n_ell * con.U_tensors(1).shape[-1])
            parts.append((corr, n_out, n_ell))
        self.original = contraction
        self.parts = parts
        self.n_elements = int(contraction.contractions[0].weights_max.shape[0])
        self._versions: tuple = ()
        self._attrs: torch.Tensor | None = None  # the element attributes of the last call
        self._groups: list[tuple[int, torch.Tensor]] = []
        self._order: torch.Tensor | None = None
        self._fold()

    def _weights(self):
        for con in self.original.contractions:
            yield from con.weights
            yield con.weights_max

    def _fold(self) -> None:
        """T_n of every part, as buffers ``folded_<part>_<n>`` (not in the state dict: they
        are derived from MACE's weights, which are; they move with ``.to()``)."""
        first = next(self.original.buffers())
        for part, ((corr, n_out, n_ell), con) in enumerate(zip(self.parts,
                                                                 self.original.contractions)):
            for nu in range(1, corr + 1):
                u = con.U_tensors(nu).detach().double()
                w = (con.weights_max if nu == corr else con.weights[corr - nu - 1]).detach()
                u = u.reshape(n_out, n_ell ** nu, u.shape[-1])
                term = torch.einsum("omk,zkc->zcom", u, w.double())
                self.register_buffer(f"folded_{part}_{nu}",
                                     term.to(dtype=first.dtype, device=first.device),
                                     persistent=False)
        self._versions = tuple(w._version for w in self._weights())

    def folded(self, part: int, nu: int) -> torch.Tensor:
        """T_nu of contraction ``part``: (elements, channels, outputs, ell^nu)."""
        return getattr(self, f"folded_{part}_{nu}")

    def _element_groups(self, y: torch.Tensor) -> list[tuple[int, torch.Tensor]] | None:
        """The atoms of each element, for one-hot attributes ``y`` (None otherwise). The
        attributes of an MD run do not change from call to call: they are compared with the
        last call's by content (an address could be reused by another tensor) and the groups
        kept."""
        last = self._attrs
        if last is not None and last.shape == y.shape and last.dtype == y.dtype and \
                last.device == y.device and torch.equal(last, y):
            return self._groups
        one_hot = (y.shape[1] == self.n_elements and bool(((y == 0) | (y == 1)).all())
                   and bool((y.sum(1) == 1).all()))
        if not one_hot:
            return None
        element = y.argmax(1)
        self._groups = [(int(z), (element == z).nonzero().squeeze(1))
                        for z in torch.unique(element).tolist()]
        self._order = torch.cat([index for _, index in self._groups])
        self._attrs = y.detach().clone()
        return self._groups

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return self.original(x, y)
        groups = self._element_groups(y)
        if groups is None:
            return self.original(x, y)
        if self._versions != tuple(w._version for w in self._weights()):
            self._fold()
        n_atoms, n_channels, n_ell = x.shape
        outs = []
        for part, (corr, n_out, _) in enumerate(self.parts):
            rows = []
            for z, index in groups:
                n = len(index)
                xt = x.index_select(0, index).permute(1, 2, 0)  # (c, ell, atoms)
                t = self.folded(part, corr)[z].to(x.dtype)
                out = torch.bmm(t.reshape(n_channels, -1, n_ell), xt)
                for nu in range(corr - 1, 0, -1):
                    c_tensor = out + self.folded(part, nu)[z].to(x.dtype).reshape(
                        n_channels, -1, 1)
                    out = (c_tensor.view(n_channels, -1, n_ell, n) * xt.unsqueeze(1)).sum(2)
                rows.append(out.view(n_channels, n_out, n).permute(2, 0, 1).reshape(n, -1))
            outs.append(x.new_zeros(n_atoms, n_channels * n_out).index_copy(
                0, self._order, torch.cat(rows)))
        return torch.cat(outs, dim=-1)


def contraction_matches(contraction: torch.nn.Module, fast: torch.nn.Module,
                        dtype: torch.dtype, device: torch.device | str = "cpu") -> float:
    """Largest difference between ``fast`` and MACE's symmetric ``contraction`` on random
    features of atoms of every element, in values and in the gradients for a random output
    gradient, relative to the scale of MACE's."""
    gen = torch.Generator().manual_seed(0)
    n_atoms = 8 * fast.n_elements
    n_channels = int(contraction.contractions[0].weights_max.shape[-1])
    x = torch.randn(n_atoms, n_channels, fast.parts[0][2], generator=gen,
                    dtype=dtype).to(device).requires_grad_()
    y = torch.nn.functional.one_hot(torch.arange(n_atoms) % fast.n_elements,
                                    fast.n_elements).to(dtype=dtype, device=device)
    was_training = fast.training
    fast.eval()
    with torch.enable_grad():
        want, got = contraction(x, y), fast(x, y)
        grad = torch.randn(want.shape, generator=gen, dtype=dtype).to(device)
        pairs = [(want, got), (torch.autograd.grad(want, x, grad)[0],
                               torch.autograd.grad(got, x, grad)[0])]
    fast.train(was_training)
    return max(float((a.detach() - b.detach()).abs().max() / a.detach().abs().max().clamp_min(
        1.0)) for a, b in pairs)


def accelerate(model: torch.nn.Module) -> int:
    """Swap the channelwise kernel in for every interaction's ``conv_tp`` of the MACE ``model``
    that it can express and that matches e3nn's (:data:`CHECK_TOLERANCE`, in the model's
    dtype and on its device); others keep e3nn's. Blocks that take a fused convolution get
    :class:`ChannelwiseConvolution` (and ``conv_fusion = "channelwise"``), others
    :class:`ChannelwiseTensorProduct`. Returns how many were swapped."""
    first = next(model.parameters())
    swapped = 0
    for block in getattr(model, "interactions", []):
        tp = getattr(block, "conv_tp", None)
        if tp is None or isinstance(tp, ChannelwiseTensorProduct) or hasattr(block,
                                                                             "conv_fusion"):
            continue
        fused = _honours_fusion(block)
        try:
            kind = ChannelwiseConvolution if fused else ChannelwiseTensorProduct
            fast = kind(tp).to(dtype=first.dtype, device=first.device)
        except (ValueError, AttributeError):
            continue
        if matches(tp, fast, first.dtype, first.device) <= CHECK_TOLERANCE.get(first.dtype,
                                                                                1e-5):
            fast.train(block.training)
            block.conv_tp = fast
            if fused:
                block.conv_fusion = "channelwise"
            swapped += 1
    for block in getattr(model, "products", []):
        contraction = getattr(block, "symmetric_contractions", None)
        if contraction is None or isinstance(contraction, ElementwiseSymmetricContraction):
            continue
        try:
            fast = ElementwiseSymmetricContraction(contraction)
        except (ValueError, AttributeError, TypeError):
            continue
        if contraction_matches(contraction, fast, first.dtype, first.device) <= (
                CHECK_TOLERANCE.get(first.dtype, 1e-5)):
            fast.train(block.training)
            block.symmetric_contractions = fast
            swapped += 1
    return swapped
