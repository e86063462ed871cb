"""A grid's cost plan: how many models, attack runs and clip-passes (:mod:`defense.passes`) it takes, counted
from the config alone, without training or attacking anything (``advaudio experiment NAME --plan``).

The plan walks the grid as :mod:`defense.runner` does: per model column, training of the original model and
every trained defense (epochs × training clips × the objective's passes, validation and robust validation
every epoch, the test pass; :func:`training_cost`), the FGSM evaluation that measures ``eps: auto``, every
attack evaluation (:mod:`defense.plan_attacks`) in each mode, its monotonicity sweep and saved examples, the
model's sanity checks (with the transfer leg of a trained defense's masking check), randomized smoothing's
certification, and the transfer replay between a column group's models. Counts that depend on the data are upper bounds (early stopping at ``train.patience``, an
attack's early stop, the base set, the depth of an ε* search); the rest are exact. Time comes from
:mod:`defense.plan_time`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attacks import create_attack
from attacks.base import Attack
from defense.grid import Grid
from defense.inference import is_smoothing, transform_config
from defense.objectives import OBJECTIVES, FGSMMix, GaussianAugment, PGDTraining, RoomAugment
from defense.passes import Passes, model_call
from defense.plan_attacks import evaluation_cost
from defense.plan_data import DataSizes, data_sizes
from defense.trades_mart import MART, TRADES
from defense.inference_cells import attack_modes
from defense.defended_victim import is_transform
from evaluation.config import EvalConfig
from evaluation.tracking import ORIGINAL
from training.step import CleanObjective
from training.trainer import TrainConfig
from victims.registry import to_dataclass


@dataclass(frozen=True)
class Combo:
    """What sets a pass's cost: a data set's clip format, a front-end and a backbone."""

    dataset: str
    frontend: str
    victim: str


@dataclass
class Item:
    """One piece of work of a plan.

    Attributes:
        combo: whose passes these are.
        phase: ``train``, ``auto_eps``, ``attack``, ``checks`` (an attack run's monotonicity sweep and saved
            examples), ``sanity``, ``certify``, ``wrap`` or ``transfer``.
        label: e.g. ``seed0/fgsm_mix/bim_a``.
        passes: clip-passes (an upper bound unless ``exact``).
        exact: the count does not depend on the data.
        runs: attack evaluations (1 for an attack item).
        clips: clips attacked (attack items).
        clip_runs: attack runs summed over the attacked clips (budgets of the ε* search), at most.
        models: models this item trains or wraps.
        expected: the plan's expectation of ``passes`` where it differs from the bound
            (:data:`defense.plan_attacks.EXPECTED_SHARE`, :func:`defense.plan_attacks.expected_search`).
    """

    combo: Combo
    phase: str
    label: str
    passes: Passes
    exact: bool = True
    runs: int = 0
    clips: int = 0
    clip_runs: int = 0
    models: int = 0
    expected: Passes | None = None

    @property
    def likely(self) -> Passes:
        """The expected passes (the bound where the plan expects no less)."""
        return self.passes if self.expected is None else self.expected


@dataclass
class Plan:
    """Every item of an experiment, the data sizes it was counted with, each combo's training config and batch
    size (for calibration) and notes on what the counts leave out."""

    name: str
    items: list[Item]
    sizes: dict[str, DataSizes]
    configs: dict[Combo, dict[str, Any]]
    batch_sizes: dict[Combo, int]
    notes: list[str] = field(default_factory=list)

    def passes(self, phase: str | None = None, expected: bool = False) -> Passes:
        """The passes of every item (of one ``phase``): at most, or ``expected``."""
        out = Passes()
        for item in self.items:
            if phase is None or item.phase == phase:
                out = out + (item.likely if expected else item.passes)
        return out


def objective_cost(defense_cfg: dict[str, Any]) -> tuple[Passes, Passes | None, bool]:
    """Per training clip: the objective's passes, its robust-validation passes (``None`` for an objective
    without an attack), and whether the plan knows the objective."""
    cfg = {k: v for k, v in defense_cfg.items() if k not in ("name", "eps_fraction")}
    if cfg.get("eps") == "auto":
        cfg["eps"] = 1.0  # the count does not depend on the budget
    objective = OBJECTIVES.create(defense_cfg.get("name", "clean"), **cfg)
    if isinstance(objective, CleanObjective):
        return Passes(train=1, fe_forward=1), None, True
    domain = objective.domain
    wave = domain == "waveform"
    rep_in = Passes(fe_forward=0 if wave else 1)

    def train_pass(input_grad: bool) -> Passes:
        return Passes(train=1, fe_forward=int(wave), fe_backward=int(wave and input_grad))

    step = model_call(1, domain, graph=True, backward=1)
    plain = model_call(1, domain, graph=False)
    if isinstance(objective, FGSMMix):
        if objective.alpha == 0:
            trained = rep_in + step + train_pass(False)
        elif objective.alpha == 1:
            trained = rep_in + train_pass(True)
        else:
            trained = rep_in + train_pass(True) + train_pass(False)
        return trained, rep_in + step + plain, True
    if isinstance(objective, PGDTraining):
        crafted = step * objective.steps + plain
        return rep_in + crafted + train_pass(False), rep_in + crafted, True
    if isinstance(objective, GaussianAugment):
        return rep_in + plain + train_pass(False), rep_in + plain, True
    if isinstance(objective, RoomAugment):  # the clean logits, then a training pass through one room draw
        return plain + train_pass(False), plain, True
    if isinstance(objective, TRADES):  # the clean prediction the KL ascends from, its steps, two training passes
        crafted = plain + step * objective.steps
        return rep_in + crafted + train_pass(False) * 2, rep_in + crafted + plain, True
    if isinstance(objective, MART):
        crafted = step * objective.steps
        return rep_in + crafted + train_pass(False) * 2, rep_in + crafted + plain, True
    return Passes(train=1, fe_forward=1), None, False


def training_cost(defense_cfg: dict[str, Any], train_cfg: dict[str, Any], sizes: DataSizes) -> tuple[Passes, bool]:
    """The passes of :func:`training.trainer.train` from scratch: fitting the normaliser, every epoch's
    objective on the training clips, validation (and robust validation when epochs are selected on it),
    and the test pass. Exact when ``train.patience`` is null (no early stop); else an upper bound."""
    tcfg = to_dataclass(TrainConfig, train_cfg, "train")
    per_clip, robust, known = objective_cost(defense_cfg)
    evaluate = model_call(1, "waveform", graph=False)
    epoch = per_clip * sizes.train + evaluate * sizes.val
    if robust is not None and tcfg.select_on in ("auto", "robust"):
        epoch = epoch + robust * sizes.val
    passes = Passes(fe_forward=sizes.train) + epoch * tcfg.epochs + evaluate * sizes.test
    return passes, known and tcfg.patience is None


def attack_from(cfg: dict[str, Any]) -> Attack:
    """The attack object of an attack config (``name`` plus its arguments)."""
    return create_attack(cfg["name"], **{k: v for k, v in cfg.items() if k != "name"})


def draws_of(attack_cfg: dict[str, Any], defense_cfg: dict[str, Any]) -> int:
    """EoT draws per call of the attacked function: ``eot_samples`` where the deployed transform is random."""
    transform = transform_config(defense_cfg)
    if transform is None or int(attack_cfg.get("eot_samples", 1)) == 1:
        return 1
    from defense.transforms import TRANSFORMS

    return int(attack_cfg["eot_samples"]) if TRANSFORMS.get(transform["transform"]).random else 1


def checks_cost(attack: Attack, ev_cfg: EvalConfig, clips: int, num_classes: int, draws: int,
                expected: bool = False) -> Passes:
    """An attack run's extras in the runner: the full monotonicity sweep of a fixed-budget untargeted attack
    on ``monotone_sample`` clips, and the representations of the saved examples and of the report's example
    (at most two front-end passes each)."""
    out = Passes(fe_forward=2 * (min(ev_cfg.wavs, clips) + 1))
    if attack.fixed_budget and not attack.targeted and ev_cfg.monotone_sample > 0:
        m = min(ev_cfg.monotone_sample, clips)
        from defense.plan_attacks import run_cost

        per_run = run_cost(attack, num_classes, draws, expected).passes + model_call(1, attack.domain, graph=False)
        to_domain = Passes(fe_forward=m if attack.domain == "representation" else 0)
        out = out + model_call(m, "waveform", graph=False) + to_domain + per_run * (m * ev_cfg.n_budgets)
    return out


def sanity_cost(domains: list[str], ev_cfg: EvalConfig, clips: int) -> Passes:
    """A model's sanity checks (:func:`defense.model_checks.sanity_for_model`): input gradients in each attacked
    domain with two losses, two deterministic forwards, and the unbounded PGD-L2 on the base set (bound)."""
    out = Passes()
    for domain in domains:
        to_domain = Passes(fe_forward=clips if domain == "representation" else 0)
        out = out + (to_domain + model_call(clips, domain, graph=True, backward=1)) * 2
    out = out + model_call(clips, "waveform", graph=False) * 2
    first = domains[0]
    unbounded = (Passes(fe_forward=clips if first == "representation" else 0)
                 + model_call(clips, first, graph=True, backward=1) * ev_cfg.unbounded_steps
                 + model_call(clips, first, graph=False))
    return out + model_call(clips, "waveform", graph=False) + unbounded


def masking_cost(domains: list[str], clips: int) -> Passes:
    """The transfer leg of a trained defense's masking check (:mod:`defense.masking_checks`): per untargeted table
    attack (its domain in ``domains``), the original model's examples (at most one per clip) through the defended
    model, and the clean clips through its front-end to size the perturbations in its units."""
    out = Passes()
    for domain in domains:
        out = out + model_call(clips, domain, graph=False) + Passes(fe_forward=clips if domain == "representation" else 0)
    return out


def plan_grid(grid: Grid) -> Plan:
    """Count every pass of ``grid`` (see the module docstring); reads each data set's split sizes.

    Raises:
        ConfigError: for a data set that is absent and has no documented size.
    """
    ev_cfg = grid.evaluation
    items: list[Item] = []
    sizes: dict[str, DataSizes] = {}
    configs: dict[Combo, dict[str, Any]] = {}
    batch_sizes: dict[Combo, int] = {}
    notes: list[str] = []
    defense_cfgs = {d: grid.defense_config(d) for d in grid.axes["defense"]}
    trainable = [d for d in grid.axes["defense"] if d != ORIGINAL and not is_transform(defense_cfgs[d])]
    attacks = {option: attack_from(cfg) for option, cfg in grid.attacks.items()}
    domains = sorted({a.domain for a in attacks.values()} or {"representation"})
    table_domains = [a.domain for option, a in attacks.items() if grid.attack_info[option].in_tables and not a.targeted]
    for dataset, frontend, victim, seed in grid.models():
        combo = Combo(dataset, frontend, victim)
        cell = grid.cell_config(dataset, frontend, victim, ORIGINAL, seed)
        if dataset not in sizes:
            sizes[dataset] = data_sizes(cell["dataset"])
        size = sizes[dataset]
        configs[combo] = cell
        batch_sizes[combo] = int(cell["train"].get("batch_size", 32))
        n = min(ev_cfg.n_examples, size.test)
        where = f"seed{seed}"
        for defense in [ORIGINAL, *trainable]:
            cfg = grid.cell_config(dataset, frontend, victim, defense, seed)
            passes, exact = training_cost(cfg["defense"], cfg["train"], size)
            items.append(Item(combo, "train", f"{where}/{defense}", passes, exact, models=1))
            if cfg["defense"].get("eps") == "auto":
                fgsm = create_attack("fgsm", domain=cfg["defense"].get("domain", "representation"),
                                     norm=cfg["defense"].get("norm", "l2"))
                clips = min(ev_cfg.n_examples, size.val)
                found = evaluation_cost(fgsm, ev_cfg, clips, size.num_classes)
                likely = evaluation_cost(fgsm, ev_cfg, clips, size.num_classes, expected=True)
                items.append(Item(combo, "auto_eps", f"{where}/{defense}", found.passes, False,
                                  expected=likely.passes))
        for defense in grid.axes["defense"]:
            if is_transform(defense_cfgs[defense]):
                items.append(Item(combo, "wrap", f"{where}/{defense}", model_call(size.test, "waveform", graph=False),
                                  models=1))
        for option, attack_cfg in grid.attacks.items():
            for defense in grid.axes["defense"]:
                for mode, cfg in attack_modes(grid, option, attack_cfg, defense_cfgs[defense]).items():
                    attack, draws = attack_from(cfg), draws_of(cfg, defense_cfgs[defense])
                    found = evaluation_cost(attack, ev_cfg, n, size.num_classes, draws=draws)
                    likely = evaluation_cost(attack, ev_cfg, n, size.num_classes, draws=draws, expected=True)
                    label = f"{where}/{defense}/{option}" + (f"+{mode}" if mode else "")
                    if not found.counted:
                        notes.append(f"{option}: attack family not counted (its passes are left out)")
                    items.append(Item(combo, "attack", label, found.passes, found.exact, runs=1, clips=n,
                                      clip_runs=found.clip_runs, expected=likely.passes))
                    items.append(Item(combo, "checks", label, checks_cost(attack, ev_cfg, n, size.num_classes, draws),
                                      False, expected=checks_cost(attack, ev_cfg, n, size.num_classes, draws, True)))
        for defense in grid.axes["defense"]:
            checks = sanity_cost(domains, ev_cfg, n)
            if defense in trainable and not is_smoothing(defense_cfgs[defense]):
                checks = checks + masking_cost(table_domains, n)
            items.append(Item(combo, "sanity", f"{where}/{defense}", checks, False))
            if is_smoothing(defense_cfgs[defense]):
                items.append(Item(combo, "certify", f"{where}/{defense}",
                                  _certify_cost(defense_cfgs[defense], grid, attacks, n, size), False))
    items.extend(_transfer_items(grid, sizes, trainable, attacks))
    for name, size in sizes.items():
        if size.source == "documented":
            notes.append(f"{name}: documented size ({size.note})")
    return Plan(grid.name, items, sizes, configs, batch_sizes, sorted(set(notes)))


def _certify_cost(defense_cfg: dict[str, Any], grid: Grid, attacks: dict[str, Attack], n: int,
                  size: DataSizes) -> Passes:
    """CERTIFY on the evaluation clips, PREDICT on each L2 attack's examples in the smoothing domain (at most
    one per clip), and the deployed model's test accuracy."""
    ev_cfg = grid.evaluation
    domain = defense_cfg.get("domain", "representation")
    to_domain = Passes(fe_forward=n if domain == "representation" else 0)
    out = to_domain + model_call(n, domain, graph=False) * (ev_cfg.certify_n0 + ev_cfg.certify_n)
    checked = sum(1 for a in attacks.values() if (a.domain, a.norm) == (domain, "l2"))
    out = out + (to_domain + model_call(n, domain, graph=False) * ev_cfg.certify_n) * checked
    return out + model_call(size.test, "waveform", graph=False)


def _transfer_items(grid: Grid, sizes: dict[str, DataSizes], trainable: list[str],
                    attacks: dict[str, Attack]) -> list[Item]:
    """The transfer replay (:func:`defense.grid_transfer.log_grid_transfer`): per (data set, front-end, seed)
    group and table attack, every trained model predicts the clean clips and every model's examples (at
    most one per clip)."""
    trained = [ORIGINAL, *trainable]
    models = [(v, d) for v in grid.axes["victim"] for d in trained]
    items = []
    if len(models) < 2:
        return items
    for dataset, frontend, victim0, seed in grid.models():
        if victim0 != grid.axes["victim"][0]:
            continue
        n = min(grid.evaluation.n_examples, sizes[dataset].test)
        for option, info in grid.attack_info.items():
            if not info.in_tables:
                continue
            domain = attacks[option].domain
            to_domain = Passes(fe_forward=n if domain == "representation" else 0)
            for victim, defense in models:
                passes = to_domain + model_call(n, domain, graph=False) * (1 + len(models))
                items.append(Item(Combo(dataset, frontend, victim), "transfer", f"seed{seed}/{defense}/{option}",
                                  passes, False))
    return items
