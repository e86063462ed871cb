"""Backbones, parametrised over the registry: shapes, gradients, batch consistency, checkpoints;
plus the architecture facts the papers state (ResNet-56's 853,018 parameters, seed 000's
AveragePoolCNN size, seed 003's Table I/II layer sizes) and the frozen gammatone filter bank."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from victims.backbones import BACKBONES, MinSize
from defense.config import CONFIG_ROOT, options, read_yaml
from victims.registry import ConfigError, check_kwargs
from victims.seed_models import AbdoliCNN1d, erb_space, gammatone_filters

NUM_CLASSES = 5
SHAPES_1D = ((1, 400), (1, 27500))
SHAPES_2D = ((20, 9), (24, 70))  # a tiny input and a non-square one


def shapes_of(name: str) -> tuple[tuple[int, int], tuple[int, int]]:
    return SHAPES_1D if name in ("abdoli_cnn1d", "m5") else SHAPES_2D


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return BACKBONES.create(name, num_classes=NUM_CLASSES, input_shape=shapes_of(name)[0])


def check_output_shape_for_two_input_sizes(name: str, net: nn.Module) -> None:
    small, other = shapes_of(name)
    net.eval()
    with torch.no_grad():
        out_small = net(torch.randn(2, 1, *small))
        out_other = BACKBONES.create(name, num_classes=NUM_CLASSES, input_shape=other).eval()(
            torch.randn(2, 1, *other))
    assert out_small.shape == (2, NUM_CLASSES) and out_other.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out_small).all() and torch.isfinite(out_other).all()


def check_every_trainable_parameter_gets_a_finite_gradient(name: str, net: nn.Module) -> None:
    net.train().zero_grad(set_to_none=True)
    logits = net(torch.randn(2, 1, *shapes_of(name)[0]))
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert trainable
    for pname, p in trainable:
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    assert sum(float(p.grad.abs().sum()) for _, p in trainable) > 0
    net.zero_grad(set_to_none=True)


def check_batched_equals_per_item_in_eval_mode(name: str, net: nn.Module) -> None:
    """atol 1e-5 / rtol 1e-4: float32 kernels may pick other algorithms for another batch size."""
    x = torch.randn(3, 1, *shapes_of(name)[0])
    net.eval()
    with torch.no_grad():
        batched = net(x)
        single = torch.cat([net(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def check_rejects_input_without_channel_dim(name: str, net: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, F, frames\)"):
        net(torch.randn(2, *shapes_of(name)[0]))


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_has_logits_gradients_batch_consistency_and_a_channel_check(name: str) -> None:
    """Every registered backbone, built once for its small input: its logits for two input sizes, a finite gradient
    for every trainable parameter, batched = per-item logits, and a one-line error for an input without a channel
    dimension. One test per backbone, so VGG-16's 134 M parameters (about 3 s to build, 0.5 GB) are built once in a
    run, not once in every worker that runs one of its checks (a module-scoped fixture did that)."""
    net = build(name)
    check_output_shape_for_two_input_sizes(name, net)
    check_every_trainable_parameter_gets_a_finite_gradient(name, net)
    check_batched_equals_per_item_in_eval_mode(name, net)
    check_rejects_input_without_channel_dim(name, net)


@pytest.mark.gpu
@pytest.mark.parametrize("name", BACKBONES.names())
def test_cuda_output_matches_cpu(name: str) -> None:
    """Same weights on CUDA (TF32 off) give the CPU logits within atol 1e-4 / rtol 1e-3."""
    net = build(name)
    x = torch.randn(2, 1, *shapes_of(name)[0])
    net.eval()
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        want = net(x)
        got = copy.deepcopy(net).cuda()(x.cuda()).cpu()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", ["averagepool_cnn", "koerich_cnn2d", "abdoli_cnn1d", "resnet56"])
def test_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    """The loader is shared by every entry; these cover both the plain and the :class:`MinSize` case."""
    shape = shapes_of(name)[0]
    net = BACKBONES.create(name, num_classes=NUM_CLASSES, input_shape=shape)
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    torch.manual_seed(123)
    loaded = BACKBONES.create(name, num_classes=NUM_CLASSES, input_shape=shape, checkpoint=str(path))
    for (key, want), got in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(want, got), key


def test_checkpoint_from_another_architecture_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet56.pt"
    torch.save(BACKBONES.create("resnet56", num_classes=3, input_shape=(8, 8)).state_dict(), path)
    with pytest.raises(ConfigError) as err:
        BACKBONES.create("koerich_cnn2d", num_classes=3, input_shape=(8, 8), checkpoint=str(path))
    message = str(err.value)
    own_keys = len(BACKBONES.create("koerich_cnn2d", num_classes=3, input_shape=(8, 8)).state_dict())
    saved_keys = len(torch.load(path, weights_only=True))
    assert "\n" not in message and "another architecture" in message
    assert f"{own_keys} missing, {saved_keys} unexpected, 0 mis-shaped keys" in message
    with pytest.raises(ConfigError, match="0 missing, 0 unexpected, 2 mis-shaped keys"):
        BACKBONES.create("resnet56", num_classes=4, input_shape=(8, 8), checkpoint=str(path))
    (tmp_path / "torn.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        BACKBONES.create("resnet56", num_classes=3, input_shape=(8, 8), checkpoint=str(tmp_path / "torn.pt"))
    with pytest.raises(ConfigError, match="checkpoint not found"):
        BACKBONES.create("resnet56", num_classes=3, input_shape=(8, 8), checkpoint=str(tmp_path / "none.pt"))


def test_checkpoint_accepts_victim_and_inner_network_states(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = BACKBONES.create("resnet56", num_classes=3, input_shape=(8, 8))
    victim_state = {"normalizer.mean": torch.zeros(1), **{f"backbone.{k}": v for k, v in net.state_dict().items()}}
    victim_ckpt = {"spec": {"victim": {"backbone": "resnet56"}}, "model": victim_state}
    torch.save(victim_ckpt, tmp_path / "victim.pt")
    assert isinstance(net, MinSize)
    torch.save(net.net.state_dict(), tmp_path / "inner.pt")  # timm's own keys, no "net." prefix
    for file in ("victim.pt", "inner.pt"):
        loaded = BACKBONES.create("resnet56", num_classes=3, input_shape=(8, 8), checkpoint=str(tmp_path / file))
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))


def test_unknown_kwarg_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown key 'drop_rte'.*drop_rate"):
        BACKBONES.create("resnet18", num_classes=3, input_shape=(8, 8), drop_rte=0.1)


def test_every_victim_config_names_a_backbone_and_valid_kwargs() -> None:
    names = options("victim")
    assert set(BACKBONES.names()) <= set(names)
    for option in names:
        cfg = read_yaml(CONFIG_ROOT / "victim" / f"{option}.yaml")
        ctor = BACKBONES.get(cfg.pop("backbone"))
        check_kwargs(ctor, {"num_classes": 2, "input_shape": (8, 8), **cfg}, option)


def test_timm_resnet56_is_the_cifar_resnet56() -> None:
    """He et al. 2016 Sec. 4.2: 6n + 2 = 56 weighted layers, 0.85 M parameters (853,018, option A); timm's factory
    (after ``victims.timm_models`` registered it) and the backbone registry (without timm) build the same network
    from the same seed."""
    import victims.timm_models  # noqa: F401  (registers "resnet56" in timm)

    model = timm.create_model("resnet56", pretrained=False, in_chans=3, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 853_018
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 56
    assert {m.out_channels for m in convs} == {16, 32, 64}
    one = timm.create_model("resnet56", in_chans=1, num_classes=7).eval()
    assert one(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("resnet56", pretrained=True)
    torch.manual_seed(5)
    through_timm = timm.create_model("resnet56", in_chans=1, num_classes=7, drop_rate=0.1)
    torch.manual_seed(5)
    ours = BACKBONES.create("resnet56", num_classes=7, input_shape=(32, 32), drop_rate=0.1).net
    assert through_timm.state_dict().keys() == ours.state_dict().keys() and ours.drop_rate == 0.1
    assert all(torch.equal(a, b) for a, b in zip(through_timm.state_dict().values(), ours.state_dict().values()))


def test_averagepool_cnn_matches_seed_000() -> None:
    """Fig. 1 of seed 000 with 12 classes: conv weights+biases, BN affine pairs, hand-summed."""
    net = BACKBONES.create("averagepool_cnn", num_classes=12, input_shape=(100, 116))
    convs = [(1, 64, 5), (64, 64, 3), (64, 128, 3), (128, 128, 3), (128, 256, 3), (256, 256, 3), (256, 512, 1),
             (512, 12, 1)]
    expected = sum(i * o * k * k + o for i, o, k in convs) + 2 * (64 + 64 + 128 + 128 + 256 + 256 + 512)
    assert expected == 1_285_836
    assert sum(p.numel() for p in net.parameters()) == expected


def test_averagepool_cnn_pads_short_inputs_circularly_to_35_frames() -> None:
    net = BACKBONES.create("averagepool_cnn", num_classes=4, input_shape=(100, 10)).eval()
    x = torch.randn(2, 1, 100, 10)
    padded = x.repeat(1, 1, 1, 5)[..., 8:43]  # 12 frames before (from index -12 % 10 = 8), 13 after
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded))


def test_averagepool_cnn_averages_frequency_then_takes_the_time_maximum() -> None:
    net = BACKBONES.create("averagepool_cnn", num_classes=4, input_shape=(40, 120)).eval()
    maps: list[torch.Tensor] = []
    hook = net.features.register_forward_hook(lambda _m, _i, out: maps.append(out))
    with torch.no_grad():
        out = net(torch.randn(2, 1, 40, 120))
    hook.remove()
    assert maps[0].shape[2:] == (2, 3)  # 40 x 120 -> 20 x 60 -> 10 x 30 -> 5 x 10 -> 2 x 3 (seed 000 Fig. 1)
    torch.testing.assert_close(out, maps[0].mean(dim=2).amax(dim=2))


def test_koerich_dense_input_follows_seed_003_table_i() -> None:
    """Table I: the last pooling leaves 12 × 103 × 64 features for mel (64 × 431), 60 × 103 × 64
    for STFT (257 × 431)."""
    net = BACKBONES.create("koerich_cnn2d", num_classes=10, input_shape=(64, 431), dense=8)
    assert net.classifier[1].in_features == 12 * 103 * 64
    assert BACKBONES.create("koerich_cnn2d", num_classes=10, input_shape=(257, 431),
                            dense=1).classifier[1].in_features == 60 * 103 * 64
    with pytest.raises(ValueError, match=r"built for inputs of \(64, 431\)"):
        net(torch.randn(1, 1, 64, 430))


def test_abdoli_layer_sizes_follow_seed_003_table_ii() -> None:
    net = BACKBONES.create("abdoli_cnn1d", num_classes=10, input_shape=(1, 110_250)).eval()
    lengths: list[int] = []
    layers = [net.gammatone] + [m for m in net.features if isinstance(m, (nn.Conv1d, nn.AvgPool1d, nn.MaxPool1d))]
    hooks = [m.register_forward_hook(lambda _m, _i, out: lengths.append(out.shape[-1])) for m in layers]
    with torch.no_grad():
        net(torch.randn(1, 1, 1, 110_250))
    for hook in hooks:
        hook.remove()
    assert lengths == [109_739, 13_717, 6_731, 841, 389, 179, 82, 41]
    assert net.classifier[1].in_features == 41 * 128


def test_gammatone_layer_is_frozen_and_stays_put() -> None:
    net = BACKBONES.create("abdoli_cnn1d", num_classes=3, input_shape=(1, 400))
    before = net.gammatone.weight.detach().clone()
    assert not net.gammatone.weight.requires_grad
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(net.train()(torch.randn(2, 1, 1, 400)), torch.tensor([0, 1])).backward()
    opt.step()
    assert net.gammatone.weight.grad is None
    assert torch.equal(net.gammatone.weight, before)


@pytest.mark.parametrize("sample_rate", [16_000, 22_050])
def test_gammatone_filters_peak_at_their_centre_frequencies(sample_rate: int) -> None:
    net = AbdoliCNN1d(3, (1, 400), sample_rate=sample_rate, low_hz=100.0, high_hz=7000.0)
    delta = torch.zeros(1, 1, 1024)
    delta[..., 511] = 1.0
    with torch.no_grad():
        impulse = net.gammatone(delta)[0, :, :512].double()  # the layer's causal impulse responses
    torch.testing.assert_close(impulse, gammatone_filters(sample_rate, 32, 512, 100.0, 7000.0), atol=1e-6, rtol=1e-4)
    centres = erb_space(100.0, 7000.0, 32)
    n_fft = 1 << 16
    response = torch.fft.rfft(impulse, n=n_fft).abs()
    peaks = torch.fft.rfftfreq(n_fft, 1 / sample_rate, dtype=torch.float64)[response.argmax(dim=1)]
    assert ((peaks - centres).abs() / centres).max() < 0.02
    torch.testing.assert_close(response.amax(dim=1), torch.ones(32, dtype=torch.float64), atol=0, rtol=1e-2)


def test_gammatone_channel_k_responds_most_to_a_tone_at_its_centre() -> None:
    sr = 16_000
    net = AbdoliCNN1d(3, (1, 400), sample_rate=sr, low_hz=100.0, high_hz=7000.0)
    centres = erb_space(100.0, 7000.0, 32)
    t = torch.arange(4096) / sr
    for k in (3, 15, 28):
        tone = torch.sin(2 * math.pi * float(centres[k]) * t).view(1, 1, -1)
        with torch.no_grad():
            energy = net.gammatone(tone)[0, :, 1024:].pow(2).mean(dim=1)
        assert int(energy.argmax()) == k


def test_erb_space_is_uniform_on_the_erb_number_scale() -> None:
    f = erb_space(50.0, 5000.0, 10)
    erb_number = 21.4 * torch.log10(4.37e-3 * f + 1)
    torch.testing.assert_close(f[[0, -1]], torch.tensor([50.0, 5000.0], dtype=torch.float64))
    steps = erb_number.diff()
    torch.testing.assert_close(steps, torch.full_like(steps, float(steps.mean())))
    with pytest.raises(ValueError, match="below Nyquist"):
        gammatone_filters(8000, 4, 64, 100.0, 4000.0)


def test_abdoli_rejects_two_dimensional_representations() -> None:
    with pytest.raises(ValueError, match=r"\(1, T\)"):
        BACKBONES.create("abdoli_cnn1d", num_classes=3, input_shape=(64, 100))


def test_min_size_upsamples_only_short_axes() -> None:
    wrap = MinSize(nn.Identity(), (4, 6))
    x = torch.randn(2, 1, 5, 7)
    assert wrap(x) is x
    const = torch.full((2, 1, 2, 7), 3.0)
    out = wrap(const)
    assert out.shape == (2, 1, 4, 7)
    torch.testing.assert_close(out, torch.full_like(out, 3.0))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["resnet18", "averagepool_cnn", "m5"])
def test_build_backbone_gives_2d_models_channels_last_weights_with_the_same_function(name: str,
                                                                                      tmp_path: Path) -> None:
    """2D backbones come channels-last (faster convolutions); logits, gradients and checkpoints are those of the
    NCHW model up to float32 rounding (relative 1e-5: a different summation order per output, not another
    function), and a checkpoint loads into a model of either layout."""
    from victims.victim import build_backbone

    torch.manual_seed(0)
    shape = shapes_of(name)[1]
    net = build_backbone({"backbone": name}, NUM_CLASSES, shape, 8000).eval()
    convs = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]
    distinct = [w for w in convs if w.shape[1] > 1 and w.shape[2] * w.shape[3] > 1]  # else the layouts coincide
    assert (name == "m5") == (not distinct)  # a 1D model has no 2D convolution to convert
    assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in distinct)
    reference = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    assert all(p.is_contiguous() for p in reference.parameters())
    x = torch.randn(3, 1, *shape, requires_grad=True)
    out, ref = net(x), reference(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    (grad,) = torch.autograd.grad(out.sum(), x)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5 * ref_grad.abs().max().item())
    torch.save(net.state_dict(), tmp_path / "w.pt")
    fresh = copy.deepcopy(reference)
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))
