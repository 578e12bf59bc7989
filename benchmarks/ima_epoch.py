"""Target 1: IMA epoch time against a 20-step PGD (adv) epoch, same model, data and batch size.

fused margin mode: <= 1.15x an adv epoch on the Moons MLP (issue 29); paper mode (Algorithm 2's separate pass):
<= 2.3x. Beside the ratio, a per-batch breakdown on the Moons MLP says where IMA's extra time goes: BPGD against
a 20-step PGD on the same batches, the bisection alone, and one forward pass of the model.

Every epoch starts from a *trained* IMA model and its final margin store, the state in which IMA spends
most of its training: BPGD's cost depends on how far each sample's margin is from the boundary, so an
untrained model (whose boundary BPGD finds in a step or two) makes IMA look far cheaper than it is.
- Moons MLP: the committed Table 1 IMA run (seed 0, noise 0.1), one full epoch over its 20000 points.
- Fashion-MNIST CNN: the `cpu`-profile IMA L-inf run (trained first into benchmarks/.trained/ if its weights are not on this
  machine: about half an hour), one epoch over the first ``--cnn-images`` of its training images.
Usage: python benchmarks/ima_epoch.py [--repeats 9] [--cnn-images 512]  (the CNN takes a third of the repeats, at least 3)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import interleaved_seconds, record, trained_run

from imalib.config import RunConfig
from imalib.data import load_splits
from imalib.data.base import ArrayDataset
from imalib.io import load_state, load_torch
from imalib.methods import AdvEps, Method, build_method
from imalib.methods.base import MarginState
from imalib.models import build_model
from imalib.norms import Clip
from imalib.profiles import table_configs
from imalib.train import fit, make_optimizer, save_checkpoint


def trained_ima(config: RunConfig) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(model weights, final margins) of the IMA run ``config``."""
    path = trained_run(config)
    return load_torch(path / "model.pt"), load_torch(path / "margins.pt")


def one_epoch(config: RunConfig, weights: dict[str, torch.Tensor], margins: torch.Tensor | None, method: Method,
              data: ArrayDataset, clip: Clip) -> None:
    """The last epoch of ``config``'s schedule, resumed from ``weights`` and ``margins`` through a checkpoint."""
    model = build_model(config.dataset)
    load_state(model, weights, Path("model.pt"))
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    state = method.init(len(data), config.epochs)
    if isinstance(state, MarginState) and margins is not None:
        state.start_from(margins)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "checkpoint.pt"
        save_checkpoint(checkpoint, model=model, optimizer=optimizer, state=state, epoch=config.epochs - 1,
                        history=[])
        fit(model, method, data, epochs=config.epochs, batch_size=config.batch_size, optimizer=optimizer,
            seed=config.seed, clip=clip, checkpoint=checkpoint, progress=False)


def compare(config: RunConfig, n_images: int | None, repeats: int) -> dict[str, Any]:
    weights, margins = trained_ima(config)
    splits = load_splits(config.dataset, n_train=config.n_train, n_test=config.n_test, seed=config.seed,
                         params=dict(config.data_params))
    data = splits.train
    if n_images is not None and n_images < len(data):
        data = data.subset(torch.arange(n_images))
        margins = margins[:n_images]
    # the trained run's own IMA (its delta rule included), once per margin mode
    ima = {mode: build_method("ima", eps=config.eps, norm=config.norm,
                              params={**dict(config.method_params), "margin_mode": mode}) for mode in ("fused", "paper")}
    methods: dict[str, Method] = {"adv": AdvEps(eps=config.eps, norm=config.norm),
                                  "ima_fused": ima["fused"], "ima_paper": ima["paper"]}
    # warm-up (untimed): otherwise the first method timed pays the one-off allocation costs
    warm = torch.arange(min(256, len(data)))
    for method in methods.values():
        one_epoch(config, weights, margins[warm], method, data.subset(warm), splits.clip)
    times = interleaved_seconds({name: (lambda m=method: one_epoch(config, weights, margins, m, data, splits.clip))
                                 for name, method in methods.items()}, repeats)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    per_repeat = {mode: [t / a for t, a in zip(times[f"ima_{mode}"], times["adv"])] for mode in ("fused", "paper")}
    return {"images": len(data), "mean_margin": float(margins.mean()), "adv_s": seconds["adv"],
            "ima_fused_s": seconds["ima_fused"], "ima_paper_s": seconds["ima_paper"],
            "fused_ratio": seconds["ima_fused"] / seconds["adv"], "paper_ratio": seconds["ima_paper"] / seconds["adv"],
            "fused_ratio_range": [min(per_repeat["fused"]), max(per_repeat["fused"])],
            "paper_ratio_range": [min(per_repeat["paper"]), max(per_repeat["paper"])], "times_s": times}


def breakdown(config: RunConfig, repeats: int, batches: int = 40) -> dict[str, float]:
    """Milliseconds per training batch of BPGD, a 20-step PGD, BPGD's bisection and one forward, on the trained
    model and margins (medians of interleaved repeats): what IMA adds to an adv step, part by part."""
    from imalib.attacks.bpgd import bisect_boundary, bpgd
    from imalib.attacks.pgd import pgd

    weights, margins = trained_ima(config)
    splits = load_splits(config.dataset, n_train=config.n_train, n_test=config.n_test, seed=config.seed,
                         params=dict(config.data_params))
    model = build_model(config.dataset)
    load_state(model, weights, Path("model.pt"))
    model.eval()
    size = config.batch_size
    x, y, eps = splits.train.x[: size * batches], splits.train.y[: size * batches], margins[: size * batches]
    generator = torch.Generator().manual_seed(0)
    parts = [(x[i:i + size], y[i:i + size], eps[i:i + size]) for i in range(0, len(x), size)]
    pairs = []
    for xb, yb, eb in parts:
        found = bpgd(model, xb, yb, eb, norm=config.norm, clip=splits.clip, generator=generator)
        far = xb + 4 * (found.x_n - xb)  # a segment from x across its boundary point, as BPGD hands to bisection
        hit = found.found & (model(far).argmax(dim=1) != yb)
        pairs.append((xb[hit], far[hit], yb[hit]))

    def run_bpgd() -> None:
        for xb, yb, eb in parts:
            bpgd(model, xb, yb, eb, norm=config.norm, clip=splits.clip, generator=generator)

    def run_pgd() -> None:
        for xb, yb, _ in parts:
            pgd(model, xb, yb, config.eps, norm=config.norm, steps=20, step_size=4 * config.eps / 20,
                clip=splits.clip, generator=generator)

    def run_bisection() -> None:
        for inside, outside, yb in pairs:
            bisect_boundary(model, inside, outside, yb, 10)

    def run_forward() -> None:
        with torch.no_grad():
            for xb, _, _ in parts:
                model(xb)

    times = interleaved_seconds({"bpgd": run_bpgd, "pgd20": run_pgd, "bisection": run_bisection,
                                 "forward": run_forward}, repeats)
    out = {f"{name}_ms_per_batch": 1000 * statistics.median(values) / len(parts) for name, values in times.items()}
    out["bisection_share_of_extra"] = out["bisection_ms_per_batch"] / (out["bpgd_ms_per_batch"]
                                                                       - out["pgd20_ms_per_batch"])
    out["hits_per_batch"] = statistics.mean(len(p[2]) for p in pairs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--cnn-images", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    moons = table_configs("moons", "linf", "cpu", seed=0, methods=["ima"], data_params={"noise": 0.1})[0]
    fashion = table_configs("fashion_mnist", "linf", "cpu", methods=["ima"])[0]
    rows = {"moons_mlp": compare(moons, None, args.repeats),
            "fashion_mnist_cnn": compare(fashion, args.cnn_images, max(3, args.repeats // 3))}
    rows["moons_mlp"]["breakdown"] = breakdown(moons, args.repeats)
    summary = "; ".join(f"{k} (trained IMA model, {v['images']} images, medians of {len(v['times_s']['adv'])} "
                        f"interleaved repeats): fused {v['fused_ratio']:.2f}x (single repeats "
                        f"{v['fused_ratio_range'][0]:.2f}-{v['fused_ratio_range'][1]:.2f}x), paper {v['paper_ratio']:.2f}x "
                        f"({v['paper_ratio_range'][0]:.2f}-{v['paper_ratio_range'][1]:.2f}x) an adv epoch"
                        for k, v in rows.items())
    parts = rows["moons_mlp"]["breakdown"]
    summary += (f"; Moons per batch: BPGD {parts['bpgd_ms_per_batch']:.2f} ms against PGD-20 "
                f"{parts['pgd20_ms_per_batch']:.2f} ms, of the difference the bisection is "
                f"{parts['bisection_share_of_extra']:.0%} ({parts['bisection_ms_per_batch']:.2f} ms: 10 forwards, "
                f"one forward {parts['forward_ms_per_batch']:.3f} ms)")
    record("ima_epoch", summary, "fused <= 1.15x on the Moons MLP (issue 29), paper <= 2.3x", rows)


if __name__ == "__main__":
    main()
