"""Target 1: IMA epoch time against a 20-step PGD (adv) epoch, same model, data and batch size.

fused margin mode: <= 1.25x an adv epoch; paper mode (Algorithm 2's separate pass): <= 2.3x.
Moons MLP (full 20000-point epoch) and the Fashion-MNIST CNN (a few batches of real-shaped data).
Usage: python benchmarks/ima_epoch.py [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch

from common import median_seconds, record
from imalib.data.base import ArrayDataset
from imalib.data.moons import load_moons
from imalib.methods import IMA, AdvEps
from imalib.models import fashion_mnist_cnn, moons_mlp
from imalib.train import fit, make_optimizer


def epoch_time(make_model, method, data: ArrayDataset, clip, repeats: int) -> float:
    def one_epoch() -> None:
        torch.manual_seed(0)
        model = make_model()
        fit(model, method, data, epochs=1, batch_size=128, optimizer=make_optimizer(model, "adam", 1e-3, 0.0),
            seed=0, clip=clip, progress=False)
    return median_seconds(one_epoch, repeats)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {}
    moons = load_moons(20000, 10, 10, seed=0).train
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (1024, 1, 28, 28), dtype=torch.uint8, generator=generator)
    torch.manual_seed(0)
    with torch.no_grad():  # label the images by the fresh model itself: every sample starts correctly classified,
        labels = fashion_mnist_cnn()(pixels.float() / 255).argmax(dim=1)  # so BPGD runs on all of them (worst case)
    images = ArrayDataset(pixels, labels)
    for name, make_model, data, clip in (("moons_mlp", moons_mlp, moons, None),
                                         ("fashion_mnist_cnn", fashion_mnist_cnn, images, (0.0, 1.0))):
        # IMA's margins start at Delta; delta=0.15 starts them at a typical mid-training value instead
        adv = epoch_time(make_model, AdvEps(eps=0.3), data, clip, args.repeats)
        fused = epoch_time(make_model, IMA(eps=0.3, margin_mode="fused", delta=0.15), data, clip, args.repeats)
        paper = epoch_time(make_model, IMA(eps=0.3, margin_mode="paper", delta=0.15), data, clip, args.repeats)
        rows[name] = {"adv_s": adv, "ima_fused_s": fused, "ima_paper_s": paper,
                      "fused_ratio": fused / adv, "paper_ratio": paper / adv}
    summary = "; ".join(f"{k}: fused {v['fused_ratio']:.2f}x, paper {v['paper_ratio']:.2f}x an adv epoch"
                        for k, v in rows.items())
    record("ima_epoch", summary, "fused <= 1.25x, paper <= 2.3x", rows)


if __name__ == "__main__":
    main()
