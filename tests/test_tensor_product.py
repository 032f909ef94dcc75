"""The channelwise edge tensor product: the same map as e3nn's, swapped in for the float32 MD."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from palirs_data import dynamics
from palirs_data.committee import Committee, load_model, predict_dipoles
from palirs_data.tensor_product import (EDGE_CHUNK, ChannelwiseConvolution,
                                        ChannelwiseTensorProduct,
                                        ElementwiseSymmetricContraction, accelerate)


def _inputs(tp, dtype, n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=gen, dtype=dtype).requires_grad_()
            for d in (tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel)]


def test_the_channelwise_product_is_e3nns_map_with_its_gradients(tiny_committee):
    """Every interaction of the tiny members (spherical harmonics to l = 3, features to l = 1):
    outputs and the gradients the forces need agree with e3nn's to rounding in float64."""
    models = [load_model(p, fast_kernels=False) for p in tiny_committee["paths"]]
    products = [block.conv_tp for m in models for block in m.interactions]
    assert max(ir.l for tp in products for _, ir in tp.irreps_in2) == 3
    for tp in products:
        fast = ChannelwiseTensorProduct(tp)
        args = _inputs(tp, torch.float64)
        want, got = tp(*args), fast(*args)
        assert float((want - got).abs().max()) < 1e-12 * float(want.abs().max())
        grad = torch.randn_like(want)
        for a, b in zip(torch.autograd.grad(want, args, grad),
                        torch.autograd.grad(got, args, grad)):
            assert float((a - b).abs().max()) < 1e-11 * max(float(a.abs().max()), 1.0)



def _graph_inputs(tp, dtype, n_nodes=11, n_edges=EDGE_CHUNK + 37, seed=2):
    gen = torch.Generator().manual_seed(seed)
    x, x2, w = (torch.randn(n, d, generator=gen, dtype=dtype).requires_grad_()
                for n, d in ((n_nodes, tp.irreps_in1.dim), (n_edges, tp.irreps_in2.dim),
                             (n_edges, tp.weight_numel)))
    return x, x2, w, torch.randint(n_nodes, (2, n_edges), generator=gen)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_fused_convolution_is_e3nns_product_summed_over_the_edges(tiny_committee, mode):
    """The kernel MACE's fusion hook calls: per atom, the sum over its incoming edges of e3nn's
    product, in values and in the gradients the forces need, over more than one block of
    edges (evaluation: blocks with a recomputing backward; training: composite operations,
    which can also be differentiated twice)."""
    models = [load_model(p, fast_kernels=False) for p in tiny_committee["paths"]]
    for tp in [block.conv_tp for m in models for block in m.interactions]:
        fused = ChannelwiseConvolution(tp).train(mode == "train")
        x, x2, w, edge_index = _graph_inputs(tp, torch.float64)
        mji = tp(x[edge_index[0]], x2, w)
        want = torch.zeros(len(x), mji.shape[1], dtype=mji.dtype).index_add(
            0, edge_index[1], mji)
        got = fused(x, x2, w, edge_index)
        assert float((want - got).abs().max()) < 1e-12 * float(want.abs().max())
        grad = torch.randn_like(want)
        create = mode == "train"
        grads_want = torch.autograd.grad(want, (x, x2, w), grad, create_graph=create)
        grads_got = torch.autograd.grad(got, (x, x2, w), grad, create_graph=create)
        for a, b in zip(grads_want, grads_got):
            assert float((a - b).abs().max()) < 1e-11 * max(float(a.abs().max()), 1.0)
        if create:  # second derivatives, as training on forces needs
            a, b = (torch.autograd.grad(g[0].square().sum(), w)[0]
                    for g in (grads_want, grads_got))
            assert float((a - b).abs().max()) < 1e-10 * max(float(a.abs().max()), 1.0)


def test_the_fused_convolution_gives_the_same_forces_in_any_edge_order(tiny_committee):
    """Blocks of edges are an evaluation order, not a result: shuffled edges, same messages
    and gradients to rounding."""
    tp = load_model(tiny_committee["paths"][0], fast_kernels=False).interactions[1].conv_tp
    fused = ChannelwiseConvolution(tp).eval()
    x, x2, w, edge_index = _graph_inputs(tp, torch.float64, n_edges=3 * EDGE_CHUNK + 5)
    order = torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(3))
    a = fused(x, x2, w, edge_index)
    b = fused(x, x2[order], w[order], edge_index[:, order])
    assert float((a - b).abs().max()) < 1e-12 * float(a.abs().max())
    ga = torch.autograd.grad(a.square().sum(), x)[0]
    gb = torch.autograd.grad(b.square().sum(), x)[0]
    assert float((ga - gb).abs().max()) < 1e-11 * float(ga.abs().max())


def _contraction_inputs(contraction, dtype, n_atoms=40, seed=4):
    gen = torch.Generator().manual_seed(seed)
    con = contraction.contractions[0]
    n_elements, n_channels = con.weights_max.shape[0], con.weights_max.shape[-1]
    x = torch.randn(n_atoms, n_channels, con.U_tensors(1).shape[-2], generator=gen,
                    dtype=dtype).requires_grad_()
    y = torch.nn.functional.one_hot(torch.randint(n_elements, (n_atoms,), generator=gen),
                                    n_elements).to(dtype)
    return x, y


def test_the_folded_symmetric_contraction_is_maces_polynomial(tiny_committee):
    """Every product block of the tiny members: the per-element folded polynomial gives MACE's
    values and gradients to rounding (float64), for atoms of mixed elements in any order."""
    models = [load_model(p, fast_kernels=False) for p in tiny_committee["paths"]]
    contractions = [b.symmetric_contractions for m in models for b in m.products]
    assert max(c.correlation for sc in contractions for c in sc.contractions) >= 2
    for contraction in contractions:
        fast = ElementwiseSymmetricContraction(contraction).eval()
        x, y = _contraction_inputs(contraction, torch.float64)
        want, got = contraction(x, y), fast(x, y)
        assert float((want - got).abs().max()) < 1e-12 * float(want.abs().max())
        grad = torch.randn_like(want)
        a, b = (torch.autograd.grad(out, x, grad)[0] for out in (want, got))
        assert float((a - b).abs().max()) < 1e-11 * float(a.abs().max())


def test_the_folded_contraction_follows_its_weights_and_its_inputs(tiny_committee):
    """Weights changed in place (an optimiser step) are folded again; training mode and
    element attributes that are not one-hot go to MACE's own module."""
    model = load_model(tiny_committee["paths"][0], fast_kernels=False)
    contraction = model.products[0].symmetric_contractions
    fast = ElementwiseSymmetricContraction(contraction).eval()
    x, y = _contraction_inputs(contraction, torch.float64)
    with torch.no_grad():
        contraction.contractions[0].weights_max.mul_(1.5)
    assert torch.allclose(fast(x, y), contraction(x, y), rtol=1e-12, atol=1e-12)
    mixed = 0.5 * y + 0.5 * y.roll(1, 0)
    assert torch.equal(fast(x, mixed), contraction(x, mixed))
    fast.train()
    assert torch.equal(fast(x, y), contraction(x, y))


def test_the_folded_contraction_keeps_its_groups_only_for_the_same_elements(tiny_committee):
    """The atoms' grouping by element is kept from call to call only while the attributes are
    equal in content: other elements in a tensor of the same shape are grouped again. The
    folded tensors move with ``.to()`` and stay out of the state dict, which keeps MACE's."""
    model = load_model(tiny_committee["paths"][0], fast_kernels=False)
    contraction = model.products[0].symmetric_contractions
    fast = ElementwiseSymmetricContraction(contraction).eval()
    x, y = _contraction_inputs(contraction, torch.float64)
    shifted = y.roll(1, 1)  # every atom another element, same shape
    assert not torch.equal(shifted, y)
    for attrs in (y, shifted, y, shifted.clone()):
        assert torch.allclose(fast(x, attrs), contraction(x, attrs), rtol=1e-12, atol=1e-12)
    keys = set(fast.state_dict())
    assert keys == {f"original.{k}" for k in contraction.state_dict()}
    fast32 = fast.to(torch.float32)
    assert fast32.folded(0, 1).dtype == torch.float32
    want = contraction.to(torch.float32)(x.float(), y.float())
    assert torch.allclose(fast32(x.float(), y.float()), want, rtol=1e-4, atol=1e-5)


class _BlockChecksInForward(torch.nn.Module):
    def forward(self, x):
        if hasattr(self, "conv_fusion"):
            return x
        return -x


class _BlockChecksInHelper(torch.nn.Module):
    def convolve_messages(self, x):
        if hasattr(self, "conv_fusion"):
            return x
        return -x

    def forward(self, x):
        return self.convolve_messages(x)


class _BlockWithoutTheHook(torch.nn.Module):
    def convolve_messages(self, x):
        return x

    def forward(self, x):
        return self.convolve_messages(x)


def test_the_fused_kernel_goes_only_to_blocks_that_take_it():
    """A block takes the fused convolution when its forward, or the message helper it calls
    (later MACE sources), checks for ``conv_fusion``; any other keeps the product alone."""
    from palirs_data.tensor_product import _honours_fusion

    assert _honours_fusion(_BlockChecksInForward())
    assert _honours_fusion(_BlockChecksInHelper())
    assert not _honours_fusion(_BlockWithoutTheHook())
    assert not _honours_fusion(torch.nn.Linear(2, 2))

def test_a_product_of_another_form_is_refused():
    from e3nn import o3  # after palirs_data, which lets e3nn load its constants

    irreps = o3.Irreps("4x0e+4x1o")
    shared = o3.FullyConnectedTensorProduct(irreps, o3.Irreps("1x0e+1x1o"), irreps)
    with pytest.raises(ValueError, match="per-edge weights"):
        ChannelwiseTensorProduct(shared)
    mixed = o3.TensorProduct(o3.Irreps("4x0e+2x1o"), o3.Irreps("1x0e"), o3.Irreps("4x0e+2x1o"),
                             [(0, 0, 0, "uvu", True), (1, 0, 1, "uvu", True)],
                             shared_weights=False, internal_weights=False)
    with pytest.raises(ValueError, match="multiplicities"):
        ChannelwiseTensorProduct(mixed)


def _methanol_batch(committee, n, dtype):
    from ase.build import molecule

    atoms = molecule("CH3OH")
    rng = np.random.default_rng(1)
    positions = np.concatenate([atoms.positions + rng.normal(0, 0.05, atoms.positions.shape)
                                for _ in range(n)])
    return committee.batch([atoms.numbers] * n), torch.as_tensor(positions, dtype=dtype)


def test_float32_models_run_it_with_the_same_forces_and_dipoles(tiny_committee,
                                                                 tiny_dipole_model):
    paths = tiny_committee["paths"]
    fast = Committee.load(paths, dtype=torch.float32)
    plain = Committee.load(paths, dtype=torch.float32, fast_kernels=False)
    double = Committee.load(paths)  # float64: e3nn's, as measured faster
    kinds = lambda c: {type(b.conv_tp).__name__ for m in c.models for b in m.interactions}
    assert kinds(fast) == {"ChannelwiseConvolution"}  # MACE's blocks take a fused kernel
    assert {getattr(b, "conv_fusion", None) for m in fast.models for b in m.interactions} == {
        "channelwise"}
    assert not kinds(plain) & {"ChannelwiseConvolution", "ChannelwiseTensorProduct"}
    assert not kinds(double) & {"ChannelwiseConvolution", "ChannelwiseTensorProduct"}
    products = lambda c: {type(b.symmetric_contractions).__name__ for m in c.models
                          for b in m.products}
    assert products(fast) == {"ElementwiseSymmetricContraction"}
    assert products(plain) == products(double) == {"SymmetricContraction"}
    assert accelerate(fast.models[0]) == 0  # already swapped: nothing to do
    batch, positions = _methanol_batch(fast, 5, torch.float32)
    a, b = fast.evaluate(batch, positions), plain.evaluate(batch, positions)
    scale = float(b.member_forces_eVA.abs().max())
    assert float((a.member_forces_eVA - b.member_forces_eVA).abs().max()) < 1e-5 * scale
    assert float((a.member_energies_eV - b.member_energies_eV).abs().max()) < 1e-4
    dipole_path = tiny_dipole_model["report"].model
    fast_dipole = load_model(dipole_path, dtype=torch.float32)
    plain_dipole = load_model(dipole_path, dtype=torch.float32, fast_kernels=False)
    assert {type(b.conv_tp).__name__ for b in fast_dipole.interactions} == {
        "ChannelwiseConvolution"}
    mu_fast = predict_dipoles(fast_dipole, batch, positions)
    mu_plain = predict_dipoles(plain_dipole, batch, positions)
    assert float((mu_fast - mu_plain).abs().max()) < 1e-5 * float(mu_plain.abs().max()) + 1e-7


def test_keeping_freed_memory_changes_no_frame(tiny_committee):
    """The allocator setting of the MD processes is about speed only: the same frames."""
    committee = Committee.load(tiny_committee["paths"], dtype=torch.float32)
    from ase.build import molecule

    atoms = molecule("CH3OH")
    frames = []
    for reuse in (False, True):
        replicas = [dynamics.Replica(key=f"r{k}", molecule="methanol", numbers=atoms.numbers,
                                     positions_A=atoms.positions, temperature_K=300.0,
                                     friction_fs=0.01, seed=k) for k in range(3)]
        md = dynamics.BatchedMD(committee, replicas, timestep_fs=0.5, reuse_memory=reuse)
        md.run(20)
        frames.append(torch.cat(md.positions).clone())
    assert torch.equal(frames[0], frames[1])
    if platform.libc_ver()[0] == "glibc":
        assert dynamics.reuse_freed_memory() is True
