"""Seconds per attack for ours, ART's and torchattacks' at equal iterations, and the ratios.

CUDA: ResNet-18 (timm, ``in_chans=1``, 10 classes) on a batch of 128 inputs of 1×128×256, timed
with ``torch.cuda.synchronize``; JSMA's peak GPU memory is reported. CPU: a small CNN on a batch of
16 inputs of 1×64×64 (under ~3 minutes on 2 cores). Inputs are uniform in [0, 1] with bounds
[0, 1] for every library, since torchattacks clamps to [0, 1]. Labels are the model's predictions.

"ideal" is the attack's gradient evaluations × (one forward + backward over the batch) measured in
the same run: iterations for FGSM/BIM/PGD/C&W; for DeepFool, per iteration one forward plus one
backward per candidate class, weighted by the share of the batch still running; for JSMA, two
backward passes per iteration. ART's and torchattacks' JSMA cannot be held to a number of
iterations (ART runs until success or ``gamma``; torchattacks 3.3 has no JSMA): their columns are
per full run, with our own JSMA run under the same ``theta``/``gamma``.

Usage: ``python -m benchmarks.attack_speed [--device cpu|cuda] [--batch N] [--iters 10] [--skip-art]``
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torchattacks
from torch import Tensor, nn

from attacks import ATTACKS
from attacks.base import RunOutput
from victims.bounds import Bounds

BOUNDS = Bounds(0.0, 1.0)
EPS_LINF = 8 / 255


def small_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Wall seconds of one call (after synchronising CUDA) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def pass_times(model: nn.Module, x: Tensor, labels: Tensor, reps: int = 5) -> tuple[float, float]:
    """Median seconds of one forward and of one forward + input-gradient backward over the batch."""
    def fwd() -> None:
        with torch.no_grad():
            model(x)

    def fwd_bwd() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(nn.functional.cross_entropy(model(xg), labels), xg)

    fwd(), fwd_bwd()
    f = sorted(timed(fwd, x.device)[0] for _ in range(reps))[reps // 2]
    fb = sorted(timed(fwd_bwd, x.device)[0] for _ in range(reps))[reps // 2]
    return f, fb


def run_ours(name: str, kwargs: dict, model: nn.Module, x: Tensor, labels: Tensor,
             eps: float | None) -> tuple[float, RunOutput]:
    attack = ATTACKS.create(name, **kwargs)
    return timed(lambda: attack.run(model, x, labels, None, BOUNDS, eps), x.device)


def run_art(name: str, params: dict, norm: str, model: nn.Module, x: Tensor, labels: Tensor,
            eps: float | None, rel_eps_step: float | None = None, y_is_target: bool = False) -> float:
    attack = ATTACKS.create("art", attack=name, params=params, norm=norm, rel_eps_step=rel_eps_step,
                            y_is_target=y_is_target)
    return timed(lambda: attack.run(model, x, labels, None, BOUNDS, eps), x.device)[0]


def run_ta(attack: torchattacks.attack.Attack, x: Tensor, labels: Tensor) -> float | None:
    """Seconds of a torchattacks run; None where it fails on this device (3.3's C&W indexes a CPU ``torch.eye``
    with CUDA labels)."""
    try:
        return timed(lambda: attack(x, labels), x.device)[0]
    except RuntimeError as err:
        print(f"torchattacks {type(attack).__name__} failed on {x.device}: {str(err).splitlines()[0]}")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--skip-art", action="store_true", help="leave out ART (slow on large inputs)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1: on a shared 2-core machine more threads make small ops 100x slower)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if device.type == "cuda":
        import timm

        model, shape, batch = timm.create_model("resnet18", in_chans=1, num_classes=10), (1, 128, 256), 128
    else:
        model, shape, batch = small_cnn(), (1, 64, 64), 16
    batch = args.batch or batch
    model = model.to(device).eval()
    x = torch.rand(batch, *shape, device=device)
    with torch.no_grad():
        labels = model(x).argmax(1)
    n_classes = 10
    t_f, t_fb = pass_times(model, x, labels)
    t_b = t_fb - t_f
    k = args.iters
    arch = "resnet18" if device.type == "cuda" else "small CNN"
    print(f"device {device} ({torch.get_num_threads()} CPU threads), model {arch}, batch {batch}x"
          f"{'x'.join(map(str, shape))}, {k} iterations; forward {t_f * 1e3:.1f} ms, forward+backward "
          f"{t_fb * 1e3:.1f} ms")
    rows: list[tuple[str, str, float, float | None, float | None, float]] = []  # label, iters, ours, ART, TA, ideal

    # FGSM / BIM / PGD: one fixed iteration count for every library.
    gradient = [
        ("FGSM", "fgsm", {}, 1, "FastGradientMethod", {"norm": "inf"}, None,
         torchattacks.FGSM(model, eps=EPS_LINF)),
        ("BIM", "bim_b", {"steps": k, "rel_stepsize": 0.25}, k, "BasicIterativeMethod", {"max_iter": k}, 0.25,
         torchattacks.BIM(model, eps=EPS_LINF, alpha=EPS_LINF / 4, steps=k)),
        ("PGD", "pgd", {"steps": k, "rel_stepsize": 0.25}, k, "ProjectedGradientDescent",
         {"norm": "inf", "max_iter": k, "num_random_init": 1}, 0.25,
         torchattacks.PGD(model, eps=EPS_LINF, alpha=EPS_LINF / 4, steps=k)),
    ]
    for label, name, kw, iters, art_name, art_params, rel, ta in gradient:
        run_ours(name, kw, model, x, labels, EPS_LINF)  # warm-up
        ours, _ = run_ours(name, kw, model, x, labels, EPS_LINF)
        art = None if args.skip_art else run_art(art_name, art_params, "linf", model, x, labels, EPS_LINF, rel)
        rows.append((label, str(iters), ours, art, run_ta(ta, x, labels), iters * t_fb))

    # DeepFool: the same maximum iterations; early stopping decides the rest.
    ours, out = run_ours("deepfool", {"steps": k, "candidates": n_classes - 1}, model, x, labels, None)
    ideal = float(out.iterations.sum()) / batch * (t_f + (n_classes - 1) * t_b)
    art = None if args.skip_art else run_art("DeepFool", {"max_iter": k, "epsilon": 0.02, "nb_grads": n_classes},
                                             "l2", model, x, labels, None)
    ta = run_ta(torchattacks.DeepFool(model, steps=k, overshoot=0.02), x, labels)
    rows.append(("DeepFool", f"<={k} (ours mean {out.iterations.float().mean():.1f})", ours, art, ta, ideal))

    # C&W L2: one binary-search step of k iterations.
    if "cw_l2" in ATTACKS:
        cw = {"binary_search_steps": 1, "max_iterations": k, "learning_rate": 0.01, "initial_const": 1.0,
              "abort_early": False}
        ours, _ = run_ours("cw_l2", cw, model, x, labels, None)
        art = None if args.skip_art else run_art(
            "CarliniL2Method", {"binary_search_steps": 1, "max_iter": k, "learning_rate": 0.01,
                                "initial_const": 1.0}, "l2", model, x, labels, None)
        ta = run_ta(torchattacks.CW(model, c=1.0, steps=k, lr=0.01), x, labels)
        rows.append(("C&W-L2", str(k), ours, art, ta, k * t_fb))
        # with abort early (the default): only the examples still optimising go through the model, so the ideal
        # is the iterations each example ran, not the longest one's times the batch
        early = {**cw, "binary_search_steps": 3, "abort_early": True}
        ours, out = run_ours("cw_l2", early, model, x, labels, None)
        ideal = float(out.iterations.sum()) / batch * t_fb
        rows.append(("C&W early", f"3 x {k} (ours mean {out.iterations.float().mean():.1f})", ours, None, None,
                     ideal))

    # JSMA: theta 1, gamma small enough for a short run.
    gamma = 4 * k / x[0].numel()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ours, out = run_ours("jsma", {"theta": 1.0, "gamma": gamma, "steps": 2 * k}, model, x, labels, None)
    peak = ""
    if device.type == "cuda":
        peak = f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    ideal = float(out.iterations.sum()) / batch * (t_f + 2 * t_b)
    art = None if args.skip_art else run_art("SaliencyMapMethod", {"theta": 1.0, "gamma": gamma}, "l0",
                                             model, x, labels, None)
    rows.append(("JSMA", f"ours mean {out.iterations.float().mean():.1f}{peak}", ours, art, None, ideal))

    print(f"\n{'attack':9} {'ours s':>9} {'ART s':>9} {'TA s':>9} {'ART/ours':>9} {'TA/ours':>8} "
          f"{'ideal s':>9} {'ours/ideal':>10}  iterations")
    for label, iters, ours, art, ta, ideal in rows:
        def fmt(v: float | None, spec: str) -> str:
            return format(v, spec) if v is not None else "n/a".rjust(int(spec.split(".")[0][1:] or 0))

        print(f"{label:9} {ours:9.4f} {fmt(art, '9.4f')} {fmt(ta, '9.4f')} "
              f"{fmt(art / ours if art else None, '9.1f')} {fmt(ta / ours if ta else None, '8.1f')} "
              f"{ideal:9.4f} {ours / ideal:10.2f}  {iters}")


if __name__ == "__main__":
    main()
