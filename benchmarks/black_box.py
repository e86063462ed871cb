"""Queries to success of the two black-box attacks, Square (Andriushchenko et al. 2020) and NES (Ilyas et al.
2018), on the same model, inputs and budgets, and their ratio.

Both attacks count their model evaluations exactly per example (``RunOutput.queries``) and stop an example at
its first success. The model is benchmarks/attack_speed.py's small CNN (CPU; ResNet-18 from timm on CUDA), trained
for a few steps on a synthetic 10-class task (a fixed random template per class plus uniform noise, in [0, 1]),
so the clean inputs are classified with a margin; labels are the model's predictions. Per norm and budget the
script prints each attack's success rate, median and mean queries over the inputs it broke, the median over
the inputs both broke, seconds, and the NES/Square ratio of that median. NES runs the project's gradient
estimate (50 antithetic samples, σ = 0.001, momentum 0.9, plateau schedule) with a learning rate of ε/5;
Square its paper's schedule with ``p_init`` 0.8 (AutoAttack's) for both norms.

On the CPU defaults (2 CPU-minutes) it measured NES/Square median-query ratios of 0.42 and 0.57 at L∞ 0.03
and 0.06, 1.16 and 0.73 at L2 1 and 2: on this small, smooth model NES's gradient estimate is the cheaper.

Usage: ``python -m benchmarks.black_box [--device cpu|cuda] [--inputs N] [--max-queries 2000]``.
"""
from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from attacks import ATTACKS
from benchmarks.attack_speed import BOUNDS, small_cnn, timed

BUDGETS = {"linf": (0.03, 0.06), "l2": (1.0, 2.0)}


def synthetic_task(shape: tuple[int, ...], n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``n`` inputs in [0, 1]: half a fixed random template of their class, half uniform noise."""
    templates = torch.rand(10, *shape, generator=torch.Generator().manual_seed(1)).to(device)
    labels = torch.arange(n, device=device) % 10
    return 0.5 * templates[labels] + 0.5 * torch.rand(n, *shape, device=device), labels


def trained_model(device: torch.device, steps: int) -> tuple[nn.Module, tuple[int, ...]]:
    if device.type == "cuda":
        import timm

        model, shape = timm.create_model("resnet18", in_chans=1, num_classes=10), (1, 128, 128)
    else:
        model, shape = small_cnn(), (1, 64, 64)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        x, y = synthetic_task(shape, 64, device)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), shape


def attack_kwargs(name: str, norm: str, eps: float, max_queries: int) -> dict:
    if name == "square":
        return {"norm": norm, "max_queries": max_queries, "p_init": 0.8}
    return {"norm": norm, "max_queries": max_queries, "max_iterations": max_queries,
            "learning_rate": eps / 5, "min_learning_rate": eps / 500}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--max-queries", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 on a shared small machine)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, shape = trained_model(device, args.train_steps)
    x, _ = synthetic_task(shape, args.inputs, device)
    with torch.no_grad():
        labels = model(x).argmax(1)
        accuracy = float((labels == torch.arange(args.inputs, device=device) % 10).float().mean())
    arch = "resnet18" if device.type == "cuda" else "small CNN"
    print(f"device {device}, model {arch} on {'x'.join(map(str, shape))}, clean accuracy {accuracy:.2f} on the "
          f"synthetic task, {args.inputs} inputs, max {args.max_queries} queries")
    print(f"{'norm':6}{'eps':>6}{'attack':>8}{'broken':>9}{'median q':>10}{'mean q':>9}{'median q (both)':>17}"
          f"{'seconds':>9}")
    for norm, budgets in BUDGETS.items():
        for eps in budgets:
            found: dict[str, tuple[Tensor, Tensor, float]] = {}
            for name in ("square", "nes"):
                attack = ATTACKS.create(name, eps=eps, **attack_kwargs(name, norm, eps, args.max_queries))
                torch.manual_seed(0)
                seconds, out = timed(lambda: attack.run(model, x, labels, None, BOUNDS, eps), device)
                with torch.no_grad():
                    broken = model(out.adversarial).argmax(1) != labels
                found[name] = (broken, out.queries, seconds)
            both = found["square"][0] & found["nes"][0]
            medians = {}
            for name, (broken, queries, seconds) in found.items():
                q = queries[broken].double() if broken.any() else torch.full((1,), float("nan"))
                medians[name] = float(queries[both].double().median()) if both.any() else float("nan")
                print(f"{norm:6}{eps:>6g}{name:>8}{int(broken.sum()):>5}/{args.inputs:<3}{float(q.median()):>10.0f}"
                      f"{float(q.mean()):>9.0f}{medians[name]:>17.0f}{seconds:>9.1f}")
            print(f"{'':20}NES / Square median queries on the {int(both.sum())} inputs both broke: "
                  f"{medians['nes'] / medians['square']:.2f}")


if __name__ == "__main__":
    main()
