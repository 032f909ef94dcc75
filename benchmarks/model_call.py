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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("data/models/committee"))
    parser.add_argument("--replicas", type=int, default=72)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    paths = sorted(args.models.glob("*.model"))
    committee = Committee.load(paths, dtype=dtype)
    atoms = molecule("CH3OH")
    batch = committee.batch([atoms.numbers] * args.replicas)
    rng = np.random.default_rng(0)
    positions = torch.as_tensor(np.concatenate(
        [atoms.positions + rng.normal(0, 0.05, atoms.positions.shape)
         for _ in range(args.replicas)]), dtype=dtype)
    print("replicas  ms per eager committee call (1 thread)")
    for n in sorted({1, 8, args.replicas}):
        sub = committee.batch([atoms.numbers] * n)
        rate = _rate(lambda p: committee.evaluate(sub, p), positions[:n * len(atoms)], n,
                     args.repeats)
        print(f"{n:8d}  {1000 * n / rate:8.1f}")
    reference = committee.evaluate(batch, positions).member_forces_eVA
    eager = _rate(lambda p: committee.evaluate(batch, p), positions, args.replicas,
                  args.repeats)
    print(f"{args.replicas} replicas, {args.dtype}, 1 thread, replica-evaluations/s")
    print(f"eager     {eager:8.1f}  1.00x")

    def report(name: str, build) -> None:
        try:
            call, forces = build()
            diff = float((forces - reference).abs().max())
            rate = _rate(call, positions, args.replicas, args.repeats)
            print(f"{name:9s} {rate:8.1f}  {rate / eager:.2f}x  (max force difference "
                  f"{diff:.1e} eV/Å)")
        except Exception as error:  # a variant the installed stack refuses: say why
            reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
            where = traceback.extract_tb(error.__traceback__)[-1]
            print(f"{name:9s} does not run: {type(error).__name__}: {reason} "
                  f"(raised in {Path(where.filename).parent.name}/{Path(where.filename).name}"
                  f", {where.name})")

    from mace.tools.compile import prepare

    prepared = Committee([prepare(load_model)(p, dtype=dtype) for p in paths])

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
