"""Faster committee calls? Eager members one after another vs scripted, compiled, stacked.

Run: python benchmarks/model_call.py [--models data/models/committee] [--replicas 72]
     [--dtype float32] [--repeats 20]

One torch thread, methanol copies slightly displaced, one committee evaluation (energies and
forces of every member) per call, as one MD step of ``palirs_data.dynamics.BatchedMD`` makes.
First prints how the eager call's time grows with the number of replicas (fixed cost per call
against cost per replica). Then prints replica-evaluations per second of each variant and its
ratio to the eager call of the same run, or the reason a variant does not run with the
installed torch / e3nn / mace:
  eager     palirs_data.committee.Committee.evaluate (the engine's call)
  prepared  the members loaded through mace.tools.compile.prepare (e3nn codegen off), eager
  scripted  the members under TorchScript (e3nn.util.jit.compile, mace's LAMMPS export path)
  fused     the scripted members with TorchScript's CPU fuser switched on
  compiled  the prepared members under torch.compile(dynamic=True)
  stacked   the members' parameters stacked (torch.func.stack_module_state) and evaluated in
            one torch.func.vmap call, forces by one backward pass
  product   the eager members with every interaction's edge tensor product (e3nn
            ``TensorProduct``, 'uvu', per-edge weights) replaced by the same map as three
            large operations (palirs_data.tensor_product.ChannelwiseTensorProduct); also
            timed alone, forward and backward of the second interaction's product on the
            edges of the batch
  convolution  the product and the sum over each atom's edges as one kernel through MACE's
            fusion hook (ChannelwiseConvolution)
  fast      what the MD uses in float32 (``fast_kernels=True``): the convolution and the
            symmetric contraction with each element's weights folded in
            (ElementwiseSymmetricContraction)
Every other variant loads the members with e3nn's product (``fast_kernels=False``).
Then (before the TorchScript variants, whose CPU fuser stays switched on) one member (the
first model) under e3nn, product, convolution and fast, timed in
``--interleave`` interleaved rounds of 10 calls each: median and range of ms per call, the
figure least moved by this machine's drift.
``--allocator reuse`` (default) first calls palirs_data.dynamics.reuse_freed_memory, as the
MD does; ``default`` keeps glibc's defaults (fresh pages for every large tensor).
"""

from __future__ import annotations

import argparse
import copy
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from ase.build import molecule

from palirs_data.committee import Committee, load_model
from palirs_data.dynamics import reuse_freed_memory
from palirs_data.tensor_product import ChannelwiseTensorProduct


def _rate(call, positions: torch.Tensor, n: int, repeats: int) -> float:
    for _ in range(2):
        call(positions)
    start = time.perf_counter()
    for i in range(repeats):
        call(positions + 1e-3 * i)
    return n * repeats / (time.perf_counter() - start)


def _stacked(committee: Committee, batch, positions: torch.Tensor) -> torch.Tensor:
    params, buffers = torch.func.stack_module_state(committee.models)
    graph = batch.graph(positions, committee.r_max)

    def energy(p, b, pos):
        return torch.func.functional_call(
            committee.models[0], (p, b), ({**graph, "positions": pos},),
            {"training": False, "compute_force": False})["energy"]

    pos = positions.expand(len(committee.models), *positions.shape).clone().requires_grad_()
    e = torch.func.vmap(energy)(params, buffers, pos)
    return -torch.autograd.grad(e.sum(), pos)[0]


def _product_alone(committee: Committee, batch, positions: torch.Tensor,
                   repeats: int) -> tuple[float, float, float]:
    """ms per forward + backward (a random output gradient, as inside the model) of the
    second interaction's product on the batch's edges: e3nn, channelwise; max difference."""
    tp = committee.models[0].interactions[1].conv_tp
    fast = ChannelwiseTensorProduct(tp).to(positions.dtype)
    n = batch.graph(positions, committee.r_max)["edge_index"].shape[1]
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(n, d, generator=gen, dtype=positions.dtype).requires_grad_()
            for d in (tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel)]
    grad = torch.randn(n, tp.irreps_out.dim, generator=gen, dtype=positions.dtype)

    def ms(op) -> float:
        for _ in range(5):
            torch.autograd.grad(op(*args), args, grad)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.autograd.grad(op(*args), args, grad)
        return 1000 * (time.perf_counter() - start) / repeats

    with torch.no_grad():
        diff = float((tp(*args) - fast(*args)).abs().max())
    return ms(tp), ms(fast), diff


def _product_only(committee: Committee) -> Committee:
    """Members loaded with e3nn's product get the channelwise product alone in its place."""
    for model in committee.models:
        dtype = next(model.parameters()).dtype
        for block in model.interactions:
            block.conv_tp = ChannelwiseTensorProduct(block.conv_tp).to(dtype)
    return committee


def _convolution_only(committee: Committee) -> Committee:
    """Members loaded with the MD's kernels get MACE's symmetric contraction back."""
    for model in committee.models:
        for block in model.products:
            block.symmetric_contractions = getattr(block.symmetric_contractions, "original",
                                                   block.symmetric_contractions)
    return committee


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("data/models/committee"))
    parser.add_argument("--replicas", type=int, default=72)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--allocator", default="reuse", choices=["reuse", "default"])
    parser.add_argument("--interleave", type=int, default=6)
    args = parser.parse_args()
    if args.allocator == "reuse":
        print(f"freed memory kept for reuse: {reuse_freed_memory()}")
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    paths = sorted(args.models.glob("*.model"))
    committee = Committee.load(paths, dtype=dtype, fast_kernels=False)
    atoms = molecule("CH3OH")
    batch = committee.batch([atoms.numbers] * args.replicas)
    rng = np.random.default_rng(0)
    positions = torch.as_tensor(np.concatenate(
        [atoms.positions + rng.normal(0, 0.05, atoms.positions.shape)
         for _ in range(args.replicas)]), dtype=dtype)
    print("replicas  ms per eager committee call (1 thread)")
    for n in sorted({1, min(8, args.replicas), args.replicas}):
        sub = committee.batch([atoms.numbers] * n)
        rate = _rate(lambda p: committee.evaluate(sub, p), positions[:n * len(atoms)], n,
                     args.repeats)
        print(f"{n:8d}  {1000 * n / rate:8.1f}")
    reference = committee.evaluate(batch, positions).member_forces_eVA
    eager = _rate(lambda p: committee.evaluate(batch, p), positions, args.replicas,
                  args.repeats)
    print(f"{args.replicas} replicas, {args.dtype}, 1 thread, replica-evaluations/s")
    print(f"eager       {eager:8.1f}  1.00x")

    def report(name: str, build) -> None:
        try:
            call, forces = build()
            diff = float((forces - reference).abs().max())
            rate = _rate(call, positions, args.replicas, args.repeats)
            print(f"{name:11s} {rate:8.1f}  {rate / eager:.2f}x  (max force difference "
                  f"{diff:.1e} eV/Å)")
        except Exception as error:  # a variant the installed stack refuses: say why
            reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
            where = traceback.extract_tb(error.__traceback__)[-1]
            print(f"{name:11s} does not run: {type(error).__name__}: {reason} "
                  f"(raised in {Path(where.filename).parent.name}/{Path(where.filename).name}"
                  f", {where.name})")

    from mace.tools.compile import prepare

    prepared = Committee([prepare(load_model)(p, dtype=dtype, fast_kernels=False) for p in paths])

    def build_prepared():
        return (lambda p: prepared.evaluate(batch, p),
                prepared.evaluate(batch, positions).member_forces_eVA)

    from e3nn.util import jit

    scripted = Committee([jit.compile(copy.deepcopy(m)) for m in committee.models])

    def build_scripted():
        return (lambda p: scripted.evaluate(batch, p),
                scripted.evaluate(batch, positions).member_forces_eVA)

    def build_fused():
        torch._C._jit_override_can_fuse_on_cpu(True)
        torch._C._jit_set_texpr_fuser_enabled(True)
        return build_scripted()

    def build_compiled():
        compiled = Committee([torch.compile(m, dynamic=True) for m in prepared.models])
        return (lambda p: compiled.evaluate(batch, p),
                compiled.evaluate(batch, positions).member_forces_eVA)

    def build_stacked():
        return (lambda p: _stacked(committee, batch, p),
                _stacked(committee, batch, positions))

    def build_product():
        product = _product_only(Committee.load(paths, dtype=dtype, fast_kernels=False))
        return (lambda p: product.evaluate(batch, p),
                product.evaluate(batch, positions).member_forces_eVA)

    def build_convolution():
        convolution = _convolution_only(Committee.load(paths, dtype=dtype, fast_kernels=True))
        return (lambda p: convolution.evaluate(batch, p),
                convolution.evaluate(batch, positions).member_forces_eVA)

    def build_fast():
        fast = Committee.load(paths, dtype=dtype, fast_kernels=True)
        return (lambda p: fast.evaluate(batch, p),
                fast.evaluate(batch, positions).member_forces_eVA)

    e3nn_ms, fast_ms, diff = _product_alone(committee, batch, positions, args.repeats)
    print(f"second interaction's edge product alone, forward + backward: e3nn {e3nn_ms:.2f} ms, "
          f"channelwise {fast_ms:.2f} ms ({e3nn_ms / fast_ms:.2f}x; max output difference "
          f"{diff:.1e})")
    report("product", build_product)
    report("convolution", build_convolution)
    report("fast", build_fast)
    one = {"e3nn": Committee.load(paths[:1], dtype=dtype, fast_kernels=False),
           "product": _product_only(Committee.load(paths[:1], dtype=dtype,
                                                   fast_kernels=False)),
           "convolution": _convolution_only(Committee.load(paths[:1], dtype=dtype,
                                                           fast_kernels=True)),
           "fast": Committee.load(paths[:1], dtype=dtype, fast_kernels=True)}
    times: dict[str, list[float]] = {name: [] for name in one}
    for _ in range(args.interleave):
        for name, member in one.items():
            times[name].append(1000 * args.replicas / _rate(
                lambda p: member.evaluate(batch, p), positions, args.replicas, 10))
    print(f"one member, {args.interleave} interleaved rounds of 10 calls, ms per call: "
          "median [min, max], ratio of medians to e3nn's")
    for name, ms in times.items():
        print(f"  {name:11s} {np.median(ms):6.2f} [{min(ms):.2f}, {max(ms):.2f}]  "
              f"{np.median(times['e3nn']) / np.median(ms):.2f}x")
    report("prepared", build_prepared)
    report("scripted", build_scripted)
    report("fused", build_fused)
    report("compiled", build_compiled)
    report("stacked", build_stacked)
    import e3nn
    import mace

    print(f"torch {torch.__version__}, e3nn {e3nn.__version__}, mace-torch {mace.__version__}")


if __name__ == "__main__":
    main()
