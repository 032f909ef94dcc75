"""Committee MD throughput against a fair baseline: every split of the cores, three drivers.

Run: python benchmarks/md_throughput.py [--models data/models/committee] [--steps 40]
     [--cores 2] [--replicas 1 3 24 72] [--dtypes float64 float32]

All drivers run Langevin MD (0.5 fs, friction 0.001 fs⁻¹) of methanol copies with the mean
forces of the same three MACE models, in one run on this machine, at every split of
``--cores`` into processes × torch threads (2 cores: 1×2 and 2×1); the processes of a split
run at the same time, and a figure is the replica-steps of all of them over the slowest one's
wall time:
  ASE way    ASE Langevin + MACECalculator holding the 3 models (the method's published way),
             one replica per process; a batch of n replicas is n/p of them one after another
             per process, so its rate does not depend on n: measured once per split. The best
             split is the baseline.
  engine     palirs_data.dynamics.BatchedMD, the n replicas divided over the p processes, as
             the stages run it (in float32 the fused channelwise convolution and the folded
             symmetric contraction, palirs_data.tensor_product);
  engine-e3nn  the same with e3nn's edge tensor product (``fast_kernels=False``);
  engine-product  the same with the channelwise product alone in place of e3nn's and the
             messages summed by MACE's scatter (the stages' kernel before the fused
             convolution, palirs_data.tensor_product.ChannelwiseConvolution);
  TorchSim   torch_sim.integrate with nvt_langevin and the 3 members wrapped as one model
             (mean energy and forces), the n replicas divided likewise (pip install
             torch-sim-atomistic; skipped when it does not import).
Every split runs under each allocator of ``--allocators``: ``default`` (glibc's defaults) and
``reuse`` (palirs_data.dynamics.reuse_freed_memory called first in every process, for every
driver; the stages' MD calls it). The baseline is the ASE way's best over splits and
allocators. Figures are replica-steps per second and the ratio to the baseline of the same
dtype.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

DTYPES = ("float64", "float32")


def _splits(cores: int) -> list[tuple[int, int]]:
    return [(p, cores // p) for p in range(1, cores + 1) if cores % p == 0]


def _share(n: int, p: int, rank: int) -> int:
    return n // p + (1 if rank < n % p else 0)


class _Runner:
    """The three drivers inside one benchmark process (models loaded once per dtype)."""

    def __init__(self, models: list[str], reuse: bool) -> None:
        self.models = models
        self.reuse = reuse
        self.cache: dict = {}
        if reuse:
            from palirs_data.dynamics import reuse_freed_memory

            reuse_freed_memory()

    def committee(self, dtype: str, fast_kernels: bool | str | None = None):
        import torch

        from palirs_data.committee import Committee

        key = ("engine", dtype, fast_kernels)
        if key not in self.cache:
            committee = Committee.load(self.models, dtype=getattr(torch, dtype),
                                       fast_kernels=(None if fast_kernels is None else
                                                     fast_kernels is True))
            if fast_kernels == "product":
                _product_only(committee)
            self.cache[key] = committee
        return self.cache[key]

    def ase(self, dtype: str, n: int, steps: int) -> tuple[int, float]:
        from ase import units
        from ase.build import molecule
        from ase.md.langevin import Langevin
        from mace.calculators import MACECalculator

        key = ("ase", dtype)
        if key not in self.cache:
            self.cache[key] = MACECalculator(model_paths=self.models, device="cpu",
                                             default_dtype=dtype)
        atoms = molecule("CH3OH")
        atoms.calc = self.cache[key]
        md = Langevin(atoms, timestep=0.5 * units.fs, temperature_K=300, friction=0.01,
                      rng=np.random.default_rng(0))
        md.run(3)
        return lambda: md.run(steps), steps  # type: ignore[return-value]

    def engine(self, dtype: str, n: int, steps: int, fast_kernels: bool | str | None = None):
        from ase.build import molecule

        from palirs_data import dynamics

        base = molecule("CH3OH")
        reps = [dynamics.Replica(key=f"r{k}", molecule="methanol", numbers=base.numbers,
                                 positions_A=base.positions,
                                 temperature_K=(300.0, 500.0, 700.0)[k % 3],
                                 friction_fs=0.001, seed=k) for k in range(n)]
        md = dynamics.BatchedMD(self.committee(dtype, fast_kernels), reps, timestep_fs=0.5,
                                reuse_memory=self.reuse)
        md.run(3)
        return lambda: md.run(steps), n * steps

    def engine_e3nn(self, dtype: str, n: int, steps: int):
        return self.engine(dtype, n, steps, fast_kernels=False)

    def engine_product(self, dtype: str, n: int, steps: int):
        return self.engine(dtype, n, steps, fast_kernels="product")

    def torchsim(self, dtype: str, n: int, steps: int):
        import torch
        import torch_sim as ts
        from ase.build import molecule
        from torch_sim.models.interface import ModelInterface
        from torch_sim.models.mace import MaceModel

        torch_dtype = getattr(torch, dtype)
        key = ("torchsim", dtype)
        if key not in self.cache:
            members = [MaceModel(model=torch.load(m, weights_only=False).to(torch_dtype),
                                 device=torch.device("cpu"), dtype=torch_dtype,
                                 compute_stress=False) for m in self.models]

            class CommitteeModel(ModelInterface):
                def __init__(self) -> None:
                    super().__init__()
                    self.members = torch.nn.ModuleList(members)
                    self._device, self._dtype = torch.device("cpu"), torch_dtype
                    self._compute_forces, self._compute_stress = True, False

                def forward(self, state):
                    outs = [m(state) for m in self.members]
                    return {"energy": torch.stack([o["energy"] for o in outs]).mean(0),
                            "forces": torch.stack([o["forces"] for o in outs]).mean(0)}

            self.cache[key] = CommitteeModel()
        model = self.cache[key]
        atoms = molecule("CH3OH")
        atoms.cell, atoms.pbc = np.eye(3) * 30.0, False
        state = ts.initialize_state([atoms.copy() for _ in range(n)], torch.device("cpu"),
                                    torch_dtype)

        def run():
            return ts.integrate(system=state, model=model, integrator=ts.nvt_langevin,
                                n_steps=steps, temperature=300.0, timestep=0.0005)

        ts.integrate(system=state, model=model, integrator=ts.nvt_langevin, n_steps=3,
                     temperature=300.0, timestep=0.0005)
        return run, n * steps


def _product_only(committee) -> None:
    """Members loaded with e3nn's product get the channelwise product alone in its place,
    summed over the edges by MACE's own scatter (the stages' kernel before the fused one)."""
    from palirs_data.tensor_product import ChannelwiseTensorProduct, matches

    for model in committee.models:
        dtype = next(model.parameters()).dtype
        for block in model.interactions:
            fast = ChannelwiseTensorProduct(block.conv_tp).to(dtype)
            if matches(block.conv_tp, fast, dtype) <= 1e-5:
                block.conv_tp = fast


def _worker(rank: int, processes: int, threads: int, models: list[str], specs: list,
            barrier, queue, reuse: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    runner = _Runner(models, reuse)
    for driver, dtype, n, steps in specs:
        share = _share(n, processes, rank)
        run, replica_steps = None, 0
        try:
            if share:
                run, replica_steps = getattr(runner, driver.replace("-", "_"))(dtype, share,
                                                                               steps)
        except Exception as exc:  # noqa: BLE001  a driver that cannot run is reported
            queue.put((driver, dtype, n, rank, None, f"{type(exc).__name__}: {exc}"))
            run = None
        barrier.wait()
        start = time.perf_counter()
        if run is not None:
            run()
        seconds = time.perf_counter() - start
        barrier.wait()
        if run is not None:
            queue.put((driver, dtype, n, rank, replica_steps, seconds))
        elif share == 0:
            queue.put((driver, dtype, n, rank, 0, 0.0))


def measure(models: list[str], processes: int, threads: int, specs: list,
            reuse: bool = False) -> dict:
    """Run ``specs`` (driver, dtype, n, steps) on ``processes`` × ``threads`` (``reuse``:
    freed memory kept for reuse); returns {(driver, dtype, n): replica-steps/s or an error
    string}."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    procs = [ctx.Process(target=_worker, args=(r, processes, threads, models, specs,
                                                barrier, queue, reuse))
             for r in range(processes)]
    for p in procs:
        p.start()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    results: dict = {}
    for _ in range(processes * len(specs)):
        driver, dtype, n, rank, steps, seconds = queue.get()
        results.setdefault((driver, dtype, n), []).append((steps, seconds))
    for p in procs:
        p.join()
    out = {}
    for key, parts in results.items():
        errors = [s for steps, s in parts if steps is None]
        if errors:
            out[key] = str(errors[0])
            continue
        out[key] = sum(s for s, _ in parts) / max(sec for _, sec in parts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("data/models/committee"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 3, 24, 72])
    ap.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    ap.add_argument("--allocators", nargs="+", choices=["default", "reuse"],
                    default=["default", "reuse"])
    args = ap.parse_args()
    models = [str(m) for m in sorted(args.models.glob("model_*.model"))]
    if len(models) != 3:
        raise SystemExit(f"{args.models}: expected 3 committee models (run dvc repro first)")
    try:
        import importlib.metadata

        torchsim = importlib.metadata.version("torch-sim-atomistic")
    except importlib.metadata.PackageNotFoundError:
        torchsim = None
    drivers = ["engine", "engine-product", "engine-e3nn"] + (["torchsim"] if torchsim else [])
    rates: dict = {}
    for alloc in args.allocators:
        for p, t in _splits(args.cores):
            specs = [("ase", d, 1, args.steps) for d in args.dtypes]
            specs += [(drv, d, n, args.steps) for d in args.dtypes for drv in drivers
                      for n in args.replicas if n >= p]
            for (drv, d, n), rate in measure(models, p, t, specs, alloc == "reuse").items():
                rates[(drv, d, n, f"{p}x{t} {alloc}")] = rate
    import torch

    print(f"methanol, 3-model MACE committee, {args.steps} steps, {args.cores} cores; torch "
          f"{torch.__version__}, TorchSim {torchsim or 'not installed'}")
    for d in args.dtypes:
        ase = {s: r for (drv, dd, _, s), r in rates.items()
               if drv == "ase" and dd == d and isinstance(r, float)}
        best_split = max(ase, key=ase.get)
        baseline = ase[best_split]
        print(f"\n{d}: baseline = ASE way at its best split and allocator {best_split} "
              f"(processes x threads): {baseline:.1f} replica-steps/s")
        for s, r in sorted(ase.items()):
            print(f"  {'ASE way':<12}{s:>14}  {'any':>5} replicas {r:9.1f} "
                  f"{r / baseline:7.2f}x")
        for drv in drivers:
            for n in args.replicas:
                row = {s: r for (dv, dd, nn, s), r in rates.items()
                       if dv == drv and dd == d and nn == n}
                for s, r in sorted(row.items()):
                    text = (f"{r:9.1f} {r / baseline:7.2f}x" if isinstance(r, float)
                            else f"failed: {r[:80]}")
                    print(f"  {drv:<12}{s:>14}  {n:>5} replicas {text}")


if __name__ == "__main__":
    main()
