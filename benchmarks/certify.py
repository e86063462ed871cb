"""Seconds for randomized smoothing's CERTIFY (Cohen, Rosenfeld & Kolter 2019): ours
(:class:`evaluation.certify.SmoothedClassifier`, noise drawn on the model's device, the draws of several
examples sharing a batch) vs ART's ``PyTorchRandomizedSmoothing.certify`` (one example at a time, noise drawn
in numpy and copied to the model), on the same model, inputs, σ, n₀, n and α, and the ratio.

Both are Monte-Carlo estimates from independent draws, so they agree statistically, not bit for bit. The timed
model is untrained (its certified radii mean nothing); agreement is checked on a linear two-class model whose
smoothed radius has a closed form (the distance to its hyperplane): for inputs at 0.25σ…2σ the script prints both
libraries' radii, the exact one, and the spread two independent bounds can have at these counts. CUDA: ResNet-18 (timm) on 64
inputs of 1×128×128, n = 10,000; CPU: benchmarks/attack_speed.py's small CNN on 32 inputs of 1×64×64, n = 1,000 (under a minute on
2 cores). Absolute times count only on a GPU.

Usage: ``python -m benchmarks.certify [--device cpu|cuda] [--inputs N] [--n N] [--sigma 0.25]``.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
from scipy import stats
from torch import nn

from benchmarks.attack_speed import small_cnn, timed
from evaluation.certify import SmoothedClassifier, clopper_pearson_lower


def radius_spread(sigma: float, p: float, n: int, alpha: float, q: float = 1e-4) -> float:
    """Difference between the certified radii at the q and 1−q quantiles of n_A ~ Bin(n, p): how far apart two
    independent CERTIFY runs can land for one input (p estimated from the runs themselves)."""
    lo, hi = stats.binom.ppf(q, n, p), stats.binom.ppf(1 - q, n, p)
    bounds = [clopper_pearson_lower(int(k), n, alpha) for k in (lo, hi)]
    radii = [sigma * stats.norm.ppf(b) if b > 0.5 else 0.0 for b in bounds]
    return float(radii[1] - radii[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--inputs", type=int, default=None)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--alpha", type=float, default=0.001)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        import timm

        model, shape, inputs, n, batch = (timm.create_model("resnet18", num_classes=10, in_chans=1),
                                          (1, 128, 128), 64, 10_000, 1000)
    else:
        model, shape, inputs, n, batch = small_cnn(), (1, 64, 64), 32, 1000, 500
    inputs, n = args.inputs or inputs, args.n or n
    model = model.to(device).eval()
    x = torch.rand(inputs, *shape, device=device)

    draws = inputs * (args.n0 + n)
    print(f"device {device}, {inputs} inputs of {'x'.join(map(str, shape))}, sigma {args.sigma}, n0 {args.n0}, "
          f"n {n}, alpha {args.alpha}")
    print(f"{'':12}{'seconds':>10}{'per noisy forward (us)':>26}")
    ours = SmoothedClassifier(model, 10, args.sigma)
    with torch.no_grad():
        ours.certify(x[:2], args.n0, batch, args.alpha, batch)  # warm-up (cuDNN autotune, allocator)
    t_ours, (pred, radius) = timed(lambda: ours.certify(x, args.n0, n, args.alpha, batch), device)
    print(f"{'ours':12}{t_ours:10.3f}{1e6 * t_ours / draws:26.1f}", flush=True)  # before ART's, which can take long

    art = PyTorchRandomizedSmoothing(model, nn.CrossEntropyLoss(), input_shape=shape, nb_classes=10,
                                     device_type="gpu" if device.type == "cuda" else "cpu", sample_size=args.n0,
                                     scale=args.sigma, alpha=args.alpha)
    x_np = x.cpu().numpy()
    art.certify(x_np[:2], n=batch, batch_size=batch)
    t_art, (art_pred, art_radius) = timed(lambda: art.certify(x_np, n=n, batch_size=batch), device)
    print(f"{'ART':12}{t_art:10.3f}{1e6 * t_art / draws:26.1f}")
    print(f"ART / ours: {t_art / t_ours:.2f}x (same predictions on {float(np.mean(pred.cpu().numpy() == art_pred)):.3f} "
          "of the inputs)")
    linear_agreement(device, args.sigma, args.n0, n, args.alpha, batch)


def linear_agreement(device: torch.device, sigma: float, n0: int, n: int, alpha: float, batch: int) -> None:
    """Both libraries certify a linear two-class model at known distances from its hyperplane."""
    dim = 256
    w = torch.zeros(dim, device=device)
    w[0] = 1.0
    model = nn.Linear(dim, 2).to(device)
    with torch.no_grad():
        model.weight.copy_(torch.stack([w, -w]) / 2)  # logit gap w·x: the class is the sign of x[0]
        model.bias.zero_()
    distance = torch.tensor([0.25, 0.5, 1.0, 1.5, 2.0], device=device) * sigma
    x = torch.zeros(len(distance), dim, device=device)
    x[:, 0] = distance
    _, ours = SmoothedClassifier(model, 2, sigma).certify(x, n0, n, alpha, batch)
    art = PyTorchRandomizedSmoothing(model, nn.CrossEntropyLoss(), input_shape=(dim,), nb_classes=2,
                                     device_type="gpu" if device.type == "cuda" else "cpu", sample_size=n0,
                                     scale=sigma, alpha=alpha)
    _, theirs = art.certify(x.cpu().numpy(), n=n, batch_size=batch)
    print(f"linear model, n {n}: distance to the hyperplane | ours | ART | spread of two runs")
    for d, a, b in zip(distance.tolist(), ours.tolist(), theirs.tolist()):
        spread = radius_spread(sigma, float(stats.norm.cdf(d / sigma)), n, alpha)
        print(f"  {d:8.4f} | {a:8.4f} | {b:8.4f} | {spread:8.4f}")


if __name__ == "__main__":
    main()
