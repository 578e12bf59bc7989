"""Time the exact 2-D L-inf evaluator (imalib.exact) on 2000 points x 7 noise levels.

Run from the repository root:  python benchmarks/exact_speed.py [--pgd]

Cases: an untrained ``moons_mlp()`` on 2000 random points labelled by the model
(every point clean-correct, so every square must be searched), the same model
on the Moons test set, and a quickly trained model (Adam, a few epochs) on the
Moons test set.  Torch runs with 2 intra-op threads as in the tests; each case
is timed with the search's default single thread (``threads=1``) and with the
caller's 2 threads (``threads=None``).  ``--pgd`` adds the paper's 100-step PGD
evaluation (cross-entropy and margin loss) on the same points for comparison.
Nothing here is asserted; timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time

import torch

from imalib.data.moons import load_moons
from imalib.evaluate import evaluate_robustness
from imalib.exact import exact_linf_distance, exact_linf_robust
from imalib.methods import CE
from imalib.models import moons_mlp
from imalib.train import fit, make_optimizer

EPS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]


def quickly_trained(seed: int = 0) -> torch.nn.Module:
    """Moons MLP trained with cross-entropy for 6 epochs on 2000 points (a few seconds)."""
    splits = load_moons(2000, 10, 10, noise=0.1, seed=seed)
    torch.manual_seed(seed)
    model = moons_mlp()
    fit(model, CE(), splits.train, epochs=6, batch_size=64, optimizer=make_optimizer(model, "adam", 1e-2, 0.0),
        seed=seed, clip=None, progress=False)
    return model.eval()


def report(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, pgd: bool) -> None:
    print(f"\n== {name}: {x.shape[0]} points x {len(EPS)} eps")
    for threads in (1, None):
        result = exact_linf_robust(model, x, y, EPS, threads=threads)
        label = "threads=1   " if threads == 1 else "threads=None"
        print(f"exact robust  {label} {result.seconds:7.2f} s  cells {result.cells:6d}  "
              f"undecided {result.undecided}")
    print("exact accuracy " + " ".join(f"{a:.4f}" for a in result.accuracy))
    began = time.perf_counter()
    distance = exact_linf_distance(model, x, y, max_radius=max(EPS))
    print(f"exact distance threads=1    {time.perf_counter() - began:7.2f} s  "
          f"median {float(distance.median()):.4f}")
    if pgd:
        pgd_result = evaluate_robustness(model, x, y, norm="linf", eps_list=EPS, clip=None)
        print(f"PGD-100 (ce+margin)        {pgd_result.seconds:7.2f} s")
        print("PGD accuracy   " + " ".join(f"{a:.4f}" for a in pgd_result.accuracy))
        missed = (pgd_result.robust & ~result.robust).sum(dim=1).tolist()
        print(f"samples PGD counts robust but the exact search breaks, per eps: {missed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pgd", action="store_true", help="also time the paper's 100-step PGD evaluation")
    args = parser.parse_args()
    torch.set_num_threads(2)
    test = load_moons(100, 10, 2000, noise=0.1, seed=1).test
    torch.manual_seed(0)
    untrained = moons_mlp().eval()
    generator = torch.Generator().manual_seed(0)
    random_x = torch.rand(2000, 2, generator=generator) * torch.tensor([3.0, 2.0]) - torch.tensor([1.0, 0.5])
    with torch.no_grad():
        random_y = untrained(random_x).argmax(dim=1)
    report("untrained moons_mlp, uniform points labelled by the model", untrained, random_x, random_y, args.pgd)
    report("untrained moons_mlp, Moons test set", untrained, test.inputs(), test.y, args.pgd)
    began = time.perf_counter()
    trained = quickly_trained()
    print(f"\n(training took {time.perf_counter() - began:.1f} s)")
    report("quickly trained moons_mlp, Moons test set", trained, test.inputs(), test.y, args.pgd)


if __name__ == "__main__":
    main()
