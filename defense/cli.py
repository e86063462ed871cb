"""``advaudio``: the command line. Each step has ``--help``; errors in a config, data set, audio file or
checkpoint, and outputs that cannot be written, are one line on stderr (``-v`` adds the traceback); any other
error shows its traceback.

Configs are composed from ``configs/`` (see ``defense/config.py``); trailing ``key=value``
arguments override them, e.g. ``advaudio train victim=resnet34 train.epochs=5``.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from defense.interrupt import Interrupted, interruptible
from victims.registry import ConfigError

log = logging.getLogger("advaudio")
Handler = Callable[[argparse.Namespace], int]
RESUMABLE = ("prepare", "train", "experiment")
"""Commands whose rerun after SIGINT/SIGTERM resumes (cache, checkpoints and finished runs are kept)."""


USER_ERRORS = {"victims.registry": "ConfigError", "training.data.errors": "DataError",
               "training.checkpoints": "CheckpointError", "training.files": "OutputError"}
"""Module and class of each error that is the user's (see :func:`user_errors`)."""


def user_errors() -> tuple[type[Exception], ...]:
    """Errors in what the user gave (config, data set and audio, checkpoint) and output files that cannot be
    written (read-only folder, full disk): one line on stderr, exit 2. Anything else is a bug or an
    environment failure and shows its traceback (``-v`` shows it always).
    Taken from the modules already loaded: an error whose module the command never imported cannot have been
    raised, and importing them (torch, MLflow, scikit-learn) to find that out made a one-line error take 4 s."""
    return tuple(getattr(sys.modules[module], name) for module, name in USER_ERRORS.items() if module in sys.modules)


def _add_config_args(p: argparse.ArgumentParser, default_experiment: str) -> None:
    p.add_argument("-e", "--experiment", default=default_experiment,
                   help=f"experiment option in configs/experiment/ or a YAML path (default: {default_experiment})")
    p.add_argument("--outputs", type=Path, default=None, help="folder for caches, checkpoints and the MLflow store")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under --outputs)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.epochs=5 or frontend=mel_db")


def _tracking_gone(args: argparse.Namespace) -> str | None:
    """After an error: why the command's tracking server stopped answering, if it did (never, for a command that did
    not load the tracking module: it talked to no store)."""
    tracking = sys.modules.get("evaluation.tracking")
    return tracking.server_gone(args.tracking_uri) if tracking is not None and hasattr(args, "tracking_uri") else None


def _compose(args: argparse.Namespace) -> dict:
    """The training config of the experiment's single model (a grid of several is a one-line error naming
    the command that runs it)."""
    from defense.config import parse_overrides
    from defense.grid import load_grid

    return load_grid(str(args.experiment), parse_overrides(args.overrides)).single_cell()


def _experiment_first(args: argparse.Namespace) -> None:
    """Let ``advaudio experiment demo k=v`` name the experiment without ``-e``."""
    if getattr(args, "overrides", None) and "=" not in args.overrides[0] and hasattr(args, "experiment"):
        args.experiment = args.overrides.pop(0)


def _outputs(args: argparse.Namespace) -> Path:
    from evaluation.tracking import OUTPUTS

    return args.outputs or OUTPUTS


def _writable_outputs(args: argparse.Namespace) -> Path:
    """The outputs folder of a command that writes there, created if missing; one that cannot be written is
    a one-line error before any work."""
    from training.files import writable_folder

    return writable_folder(_outputs(args), "outputs folder (--outputs or ADVAUDIO_OUTPUTS)")


def cmd_prepare(args: argparse.Namespace) -> int:
    """Decode (or render) and cache the configured data set, and print its splits."""
    from training.data import load_splits

    cfg = _compose(args)
    splits = load_splits(cfg["dataset"])
    print(f"{cfg['dataset']['name']}: {len(splits.class_names)} classes, {splits.train.sample_rate} Hz, "
          f"{splits.train.num_samples} samples per clip; train {len(splits.train)}, val {len(splits.val)}, "
          f"test {len(splits.test)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one victim and log it to MLflow."""
    from defense.pipeline import train_from_config

    cfg = _compose(args)
    done = train_from_config(cfg, experiment=args.mlflow_experiment, tracking_uri=args.tracking_uri,
                             outputs=_writable_outputs(args))
    res = done.result
    print(f"test accuracy {res.test_accuracy:.4f} (best epoch {res.best_epoch}, {len(res.history)} epochs"
          f"{', stopped early' if res.stopped_early else ''})")
    print(f"checkpoint: {done.checkpoint}")
    reused = " (reused: finished before, nothing trained or logged)" if done.reused else ""
    print(f"MLflow run: {done.run_id}{reused}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    """Craft an adversarial WAV from a WAV and a checkpoint, printing the prediction before and after and
    the SNR; a bar on stderr shows the model calls and the best SNR so far. Trailing key=value arguments override
    the attack's config (e.g. eps=0.01 steps=200). Exit status: 0 the victim is fooled and the WAV written;
    3 the attack did not fool it (nothing is written); 2 a user error (one line); 1 a crash."""
    from defense.craft import craft_file
    from defense.config import load_option, parse_overrides, set_dotted

    cfg = load_option("attack", args.attack)
    for key, value in parse_overrides(args.overrides).items():
        set_dotted(cfg, key, value)
    with _attack_progress(args.attack, args.no_progress) as tick:
        done = craft_file(args.checkpoint, args.input, args.output, cfg, target=args.target, device=args.device,
                          progress=tick, max_seconds=args.max_seconds)
    print(f"before: {done.before} ({done.before_confidence:.3f})")
    print(f"after:  {done.after} ({done.after_confidence:.3f}) -> {'success' if done.success else 'failed'}")
    ran = f"{done.calls} model call{'' if done.calls == 1 else 's'} in {done.seconds:.1f} s"
    if done.timed_out:
        ran = f"stopped at --max-seconds {args.max_seconds:g} after {ran}"
    if done.output is None:
        print(f"not fooled ({ran}); nothing written to {args.output}")
        return 3
    print(f"SNR: {done.snr_db:.2f} dB; written to {done.output} ({ran})")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Run an experiment grid (train original and defended victims, attack both, compute ε_r), resuming
    finished cells, then print seed 004's Tables I-III."""
    from tqdm import tqdm

    from defense.grid import load_grid
    from defense.plan_run import bar_format, record_outcome, run_plan
    from defense.plan_time import measuring
    from defense.runner import count_steps, run_grid
    from defense.config import parse_overrides

    args.experiment = _experiment_option(str(args.experiment))
    if args.dry_run:
        from defense.dryrun import main as dry_run

        return dry_run(args)
    raw = _read_experiment(str(args.experiment))
    if args.plan:
        from defense.plan_run import print_plan

        return print_plan(raw, str(args.experiment), parse_overrides(args.overrides))
    if "study" in raw:
        return _run_study(raw, args)
    grid = load_grid(args.experiment, parse_overrides(args.overrides))
    if not grid.axes["attack"]:
        raise ConfigError(f"experiment '{grid.name}' has no attacks (grid.attack): train its model with "
                          f"`advaudio train -e {args.experiment}`")
    total = count_steps(grid) if args.executor == "local" else len(list(grid.models()))
    est = run_plan(raw, str(args.experiment), parse_overrides(args.overrides))
    with tqdm(total=total, desc=grid.name, unit="step", disable=args.no_progress, bar_format=bar_format(est)) as bar, \
            measuring(args.executor == "local") as measured:  # a Ray run's passes are counted in its workers
        run_grid(grid, tracking_uri=args.tracking_uri, outputs=_writable_outputs(args), executor=args.executor,
                 ray_address=args.ray_address, progress=_ticker(bar))
    record_outcome(grid, est, *measured())
    return _report(grid.name, args.tracking_uri, _outputs(args))


def _ticker(bar: Any) -> Callable[..., None]:
    """Progress callback on a tqdm bar: ``advance`` steps it, otherwise the message (what runs inside a
    step: an epoch, an attack) only replaces its postfix."""

    def tick(message: str, advance: bool = True) -> None:
        bar.set_postfix_str(message, refresh=not advance)
        if advance:
            bar.update(1)

    return tick


@contextlib.contextmanager
def _attack_progress(attack: str, hidden: bool) -> Iterator[Callable[[Any], None]]:
    """Progress hook of ``advaudio attack``: a tqdm bar on stderr, opened at the attack's first model call (a
    check that fails before prints its line alone), with the calls (out of a gradient attack's steps) and the
    least-perturbed fooling input so far."""
    from tqdm import tqdm

    bars: list[Any] = []

    def tick(done: Any) -> None:
        if hidden:
            return
        if not bars:
            bars.append(tqdm(total=done.limit, desc=f"attack {attack}", unit="call", leave=False))
        best = ("not fooled yet" if done.best_norm is None else f"best SNR {done.best_snr_db:.1f} dB"
                if done.best_snr_db is not None else f"best L2 {done.best_norm:.3g}")
        bars[0].set_postfix_str(best, refresh=False)
        bars[0].update(done.calls - bars[0].n)

    try:
        yield tick
    finally:
        for bar in bars:
            bar.close()


def _experiment_option(name: str) -> str:
    """The experiment ``name`` names: a YAML path as given, an option under its current name (a study's experiment
    files keep their earlier names as aliases, e.g. ``seed000`` for ``prinz_flexer``)."""
    from defense.studies import STUDIES

    return name if Path(name).suffix in (".yaml", ".yml") else STUDIES.experiment_option(name)


def _read_experiment(name: str) -> dict:
    """The raw experiment YAML named by option or path."""
    from defense.config import load_option, read_yaml

    path = Path(name)
    return read_yaml(path) if path.suffix in (".yaml", ".yml") else load_option("experiment", name)


def _run_study(raw: dict, args: argparse.Namespace) -> int:
    """Run the study the experiment names (``study:`` key, :data:`defense.studies.STUDIES`) and print its tables."""
    from tqdm import tqdm

    from defense.config import parse_overrides
    from defense.plan_run import bar_format, run_plan
    from defense.studies import STUDIES

    module = STUDIES.get(str(raw["study"]))
    est = run_plan(raw, str(args.experiment), parse_overrides(args.overrides))
    with tqdm(desc=str(raw.get("name", raw["study"])), unit="step", disable=args.no_progress,
              bar_format=bar_format(est, steps=False)) as bar:
        name = module.run(raw, parse_overrides(args.overrides), tracking_uri=args.tracking_uri,
                          outputs=_writable_outputs(args), progress=_ticker(bar))
    print(module.report(name, args.tracking_uri, _outputs(args)))
    return 0


def _report(experiment: str, tracking_uri: str | None, outputs: Path) -> int:
    import mlflow

    from evaluation.examples import write_example_figures
    from evaluation.report import format_tables, write_tables
    from evaluation.report_data import MODEL_KINDS, collect
    from evaluation.report_tables import verdict_counts
    from defense.studies import STUDIES, STUDY_TAG
    from evaluation.stored import open_experiment

    study = open_experiment(experiment, tracking_uri, outputs).tags.get(STUDY_TAG)
    if study:
        print(STUDIES.get(study).report(experiment, tracking_uri, outputs))
        return 0
    open_experiment(experiment, tracking_uri, outputs, kinds=(*MODEL_KINDS, "attack"))
    data = collect(experiment, mlflow.get_tracking_uri())
    if data.rows.empty:  # e.g. only `advaudio train` runs: single models without a grid's coordinates
        raise ConfigError(f"experiment '{experiment}' in the MLflow store {mlflow.get_tracking_uri()} holds no grid "
                          "model or attack run (no data set and front-end tags): nothing to report (Tables I-III "
                          f"come from `advaudio experiment {experiment}`)")
    paths = write_tables(data, outputs / "reports" / experiment)
    figures = write_example_figures(data, paths[0].parent, mlflow.get_tracking_uri())
    print(format_tables(data))
    for defense in data.defenses:
        counts = verdict_counts(data, defense)
        print(f"Table III verdicts ({defense}): " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    print(f"tables written to {paths[0].parent}")
    if figures:
        print(f"seed 004's Fig. 1 (one clip under every attack): {', '.join(p.name for p in figures)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild seed 004's Tables I-III (CSV and Markdown) from the MLflow runs of an experiment alone. A missing
    store, an unknown experiment or one without runs is a one-line error that creates nothing."""
    if _outputs(args).exists():  # an existing folder that cannot be written is refused first; a missing one is
        _writable_outputs(args)  # never created here: the store it would hold is missing too
    try:
        return _report(args.name, args.tracking_uri, _outputs(args))
    except ConfigError as err:
        from defense.studies import STUDIES

        current = STUDIES.experiment_option(args.name)  # a study experiment's earlier name, e.g. seed000
        if current == args.name:
            raise
        try:
            return _report(current, args.tracking_uri, _outputs(args))
        except ConfigError:
            raise err from None


def cmd_ui(args: argparse.Namespace) -> int:
    """Open the MLflow UI on 127.0.0.1 over the experiment store and print, once it answers, per experiment the
    address of the runs table with every trained model's eps_r, fooling AUC and their intervals as columns.
    The server's processes are stopped with the command (Ctrl-C, SIGTERM); a port that is not free, a tracking
    server that does not answer or a UI that does not come up is a one-line error."""
    from defense.ui_server import ServerError, UiServer, check_port

    check_port(args.port)  # before loading MLflow: a second
    from mlflow.tracking import MlflowClient

    from evaluation.tracking import check_server, default_tracking_uri, iter_runs, tag
    from evaluation.ui_view import save_runs_view, view_url

    uri = args.tracking_uri or default_tracking_uri(_outputs(args))
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    client = MlflowClient(uri)
    views = []
    for exp in client.search_experiments():
        if next(iter_runs(exp.experiment_id, f"tags.`{tag('kind')}` = 'train'", client), None) is not None:
            save_runs_view(exp.experiment_id, client)
            views.append((exp.name, exp.experiment_id))
    try:
        with UiServer(uri, args.port) as server:
            for name, exp_id in views:
                print(f"{name}: {view_url(server.url, exp_id)}")
            print(f"MLflow UI on {server.url} (store: {uri}); Ctrl-C stops it", flush=True)
            server.wait()
    except ServerError as err:
        print(f"advaudio ui: error: {err}", file=sys.stderr)
        return 1


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Render the entries of a threat model (the JSON files advaudio benchmark wrote, by default in
    <outputs>/leaderboard/THREAT_MODEL/) as a static, self-contained HTML page (index.html: a sortable table whose
    rows link to the model cards, a robust-vs-clean accuracy scatter with interval bars) and as Markdown
    (leaderboard.md, beside scatter.svg); prints their paths. A folder without entries, a malformed entry, entries
    of another or of several threat models, entries whose config hash is not the threat model's current one and
    two entries with one model name are one-line errors that write nothing."""
    from leaderboard.page import Board, write_pages

    entries = args.entries or _outputs(args) / "leaderboard" / args.threat_model
    for path in write_pages(Board.load(entries, args.threat_model), args.out or entries):
        print(path)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Evaluate a trained victim (or an external nn.Module, --external) under a named threat model
    (configs/threat_model) and write its leaderboard entry: clean and robust accuracy at the budget under the per-clip
    worst case of the protocol's attacks, the median eps* and eps_r against --reference, certified accuracy if the
    model is smoothed, each with its interval, and the model card; validated against leaderboard/entry.schema.json,
    written atomically to <entries>/<name>.json (default entries: <outputs>/leaderboard/<threat model>, where
    advaudio leaderboard reads) and logged to MLflow (experiment leaderboard)."""
    from leaderboard.benchmark import benchmark

    done = benchmark(args.checkpoint, args.threat_model, name=args.name, reference=args.reference,
                     outputs=_writable_outputs(args), entries=args.entries, external=args.external,
                     transform=args.transform, tracking_uri=args.tracking_uri, data_root=args.data_root,
                     progress=None if args.no_progress else lambda line: print(line, file=sys.stderr, flush=True))
    metrics = done.entry["metrics"]

    def show(key: str) -> str:
        found = metrics[key]
        if found is None:
            return "n/a"
        value, low, high = (("-" if v is None else f"{v:.4g}") for v in (found["value"], found["low"], found["high"]))
        return f"{value} [{low}, {high}]"

    for key in ("clean_accuracy", "robust_accuracy", "eps_star_median", "eps_r", "certified_accuracy"):
        print(f"{key}: {show(key)}")
    print(f"entry: {done.path}")
    print(f"MLflow run: {done.run_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advaudio", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress at INFO level and show the traceback of every error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="decode/render and cache a data set", description=cmd_prepare.__doc__)
    _add_config_args(p, "train")
    p.set_defaults(handler=cmd_prepare, imports=("training.data",))

    p = sub.add_parser("train", help="train one victim (tracked in MLflow)", description=cmd_train.__doc__)
    _add_config_args(p, "train")
    p.add_argument("--mlflow-experiment", default="advaudio", help="MLflow experiment name (default: advaudio)")
    p.set_defaults(handler=cmd_train, imports=("defense.pipeline",))

    p = sub.add_parser("attack", help="craft an adversarial WAV from a WAV and a checkpoint",
                       description=cmd_attack.__doc__)
    p.add_argument("--checkpoint", type=Path, required=True, help="victim checkpoint (*.victim.pt)")
    p.add_argument("--input", type=Path, required=True, help="input audio file")
    p.add_argument("--output", type=Path, required=True, help="adversarial WAV to write")
    p.add_argument("--attack", default="pgdn", help="attack option in configs/attack/ (default: pgdn)")
    p.add_argument("--target", default=None, help="target class name or index (makes the attack targeted)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop the attack after this long and keep its least-perturbed fooling input so far")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="attack config overrides, e.g. eps=0.01")
    p.set_defaults(handler=cmd_attack, imports=("defense.craft",))

    p = sub.add_parser("experiment", help="run an experiment grid and print Tables I-III",
                       description=cmd_experiment.__doc__)
    _add_config_args(p, "demo")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="run model columns one after another (local) or as Ray tasks (ray)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="run every cell for a handful of steps to a throw-away store, exit 1 naming the first failing "
                        "cell: each data set's loader on a few clips (a synthetic stand-in in its own layout where "
                        "the root is absent); each (data set, front-end, backbone) at its real input size (front-end "
                        "on real-length clips, backbone forward and backward on the meta device: shapes, no "
                        "arithmetic); each cell end to end on short clips with small front-ends (n_fft <= 64), one "
                        "epoch, attacks at <= 2 steps, 2 clips (defense/dryrun*.py)")
    p.add_argument("--cover", action="store_true",
                   help="with --dry-run: run cells end to end only in the model columns that cover every data set, "
                        "front-end, backbone and seed (the first with every defense and attack, the others pairwise: "
                        "every defense with one attack, the original model with every attack); every model is still "
                        "checked at its real input size")
    p.add_argument("--keep", action="store_true", help="keep the dry run's folder (under --outputs if given)")
    p.add_argument("--plan", action="store_true",
                   help="print the models, attack runs, clip-passes and estimated wall time on this machine's device "
                        "(a short calibration); train and attack nothing")
    p.set_defaults(handler=cmd_experiment, imports=("defense.runner",))

    p = sub.add_parser("report", help="rebuild Tables I-III from MLflow", description=cmd_report.__doc__)
    p.add_argument("name", nargs="?", default="demo", help="MLflow experiment name (default: demo)")
    p.add_argument("--outputs", type=Path, default=None, help="folder of the default MLflow store and reports")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    p.set_defaults(handler=cmd_report, imports=("evaluation.report", "evaluation.report_data"))

    p = sub.add_parser("ui", help="open the MLflow UI on 127.0.0.1", description=cmd_ui.__doc__)
    p.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    p.add_argument("--outputs", type=Path, default=None, help="folder of the default MLflow store")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    p.set_defaults(handler=cmd_ui)

    p = sub.add_parser("benchmark", help="evaluate a model under a threat model and write its leaderboard entry",
                       description=cmd_benchmark.__doc__)
    p.add_argument("checkpoint", type=Path, help="victim checkpoint (*.victim.pt), or the weights an --external factory loads")
    p.add_argument("--threat-model", required=True, help="threat model option in configs/threat_model/")
    p.add_argument("--name", default=None, help="the entry's display name (default: the checkpoint's file name)")
    p.add_argument("--reference", default=None,
                   help="eps_r reference: an entry JSON of the same threat model, or a victim checkpoint")
    p.add_argument("--external", default=None, metavar="MODULE:FACTORY",
                   help="an external model: factory(checkpoint) -> nn.Module mapping waveforms (N, samples) to logits "
                        "(N, classes), with attributes sample_rate and class_names (leaderboard/external.py)")
    p.add_argument("--transform", default=None,
                   help="deploy the model behind an input-transform defense option (configs/defense/, e.g. quantize_8bit)")
    p.add_argument("--entries", type=Path, default=None,
                   help="folder of the threat model's entries (default: <outputs>/leaderboard/<threat model>)")
    p.add_argument("--data-root", default=None, help="where this machine keeps the threat model's data set")
    p.add_argument("--outputs", type=Path, default=None, help="folder of the default MLflow store")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (also where the training run is read)")
    p.add_argument("--no-progress", action="store_true", help="print no step lines on stderr")
    p.set_defaults(handler=cmd_benchmark, imports=("leaderboard.benchmark",))

    p = sub.add_parser("leaderboard", help="render a threat model's entries as an HTML page and Markdown",
                       description=cmd_leaderboard.__doc__)
    p.add_argument("threat_model", metavar="THREAT_MODEL", help="threat model name (the entries' threat_model.name)")
    p.add_argument("--entries", type=Path, default=None,
                   help="folder of entry JSON files (default: <outputs>/leaderboard/THREAT_MODEL)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for index.html, leaderboard.md and scatter.svg (default: the entries folder)")
    p.add_argument("--outputs", type=Path, default=None, help="outputs folder of the default entries folder")
    p.set_defaults(handler=cmd_leaderboard)
    return parser


def _import_frozen(modules: Sequence[str]) -> None:
    """Import a command's heavy modules (torch, MLflow and the package: about 5,000 modules) with the garbage
    collector off, collect once, and freeze what is left out of later collections' way. Imports make few cycles, but
    the collections on the way walked every object made so far: a tiny grid as a command took 14.2-14.5 instead of
    15.6-16.5 s, 13.0 instead of 14.4-15.0 user CPU-s (2026-12-05, 2-core CPU). Only speed depends on the list: a
    module a command needs later is imported then. Run by :func:`main` for a process of its own only (frozen objects
    are never freed: a caller's objects alive at that moment would stay)."""
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        gc.enable()
    gc.collect()
    gc.freeze()


def _interrupted(command: str, err: Interrupted) -> str:
    """The one line for a command stopped by SIGINT or SIGTERM."""
    line = f"interrupted ({err.name})"
    if command in RESUMABLE:
        line += "; rerun the same command to resume"
    if err.unmarked:
        line += f"; the store did not answer: runs {', '.join(err.unmarked)} are not marked KILLED"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``advaudio`` console script and ``python -m defense.cli`` (``argv`` None: the process's
    command line; a command's heavy modules are then imported with :func:`_import_frozen`), or a command run in an
    existing process (``argv`` given, e.g. a test or a notebook)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:  # key=value typed after an option (`advaudio experiment demo --outputs d train.seed=1`)
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    _experiment_first(args)
    handler: Handler = args.handler
    try:
        with interruptible():
            if argv is None:  # the process's own command line: the console script, `python -m defense.cli`
                _import_frozen(getattr(args, "imports", ()))
            return handler(args)
    except Interrupted as err:
        print(f"advaudio {args.command}: {_interrupted(args.command, err)}", file=sys.stderr)
        return err.exit_code
    except Exception as err:
        gone = _tracking_gone(args)
        if gone is not None and not args.verbose:  # whatever failed, the cause is the store going away
            resume = ("; finished runs are kept: rerun the same command once the server is back and it resumes"
                      if args.command in RESUMABLE else "")
            print(f"advaudio {args.command}: error: {gone}{resume}", file=sys.stderr)
            return 2
        if args.verbose or not isinstance(err, user_errors()):
            raise
        print(f"advaudio {args.command}: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
