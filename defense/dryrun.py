"""``advaudio experiment NAME --dry-run``: every cell of an experiment for a handful of steps, to a throw-away store
(the convention of Lightning's ``fast_dev_run``), so a config that would fail after hours fails in minutes, naming
its cell.

Four parts, each through the code a real run takes, stopping at the first failure:

1. **Data** (:mod:`defense.dryrun_data`): every data set's loader on a few clips in the data set's own layout: its
   real recordings where the root exists, a synthetic stand-in where it does not (said so).
2. **Every model at its real input size** (:mod:`defense.dryrun_models`): each (data set, front-end, backbone) of the
   config: the real front-end on real-length clips, the backbone forward and backward at that shape.
3. **Every cell end to end** on short clips (:mod:`defense.dryrun_shrink`): a grid's every data set, front-end,
   victim, seed (two at most), defense and attack through :func:`defense.runner.run_grid`
   (:mod:`defense.dryrun_grid`); a study's every step through its own ``run`` (its registered ``dry``, :mod:`defense.studies`).
4. **The check and the report**: the store holds a finished run of every model and attack cell (each attack on at
   least one clip); the tables are rebuilt from it; the UI view is saved.

The folder (``--outputs``, else the system's temporary folder) is removed afterwards unless ``--keep``. A failure
prints one line naming the cell (data set / front-end / victim / defense / attack, or the study step) and exits 1.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from defense.config import parse_overrides, read_yaml, load_option
from defense.dryrun_data import DryData, key_of, prepare
from defense.dryrun_grid import GridDry, store_uri
from defense.dryrun_models import check_model
from defense.dryrun_shrink import clip_seconds
from defense.grid import load_grid
from defense.studies import STUDIES
from victims.registry import ConfigError

EXIT_FAILED = 1
"""Exit status of a dry run that found a failing cell."""


class CellFailed(Exception):
    """A part of the dry run failed: ``where`` names the cell or step, ``cause`` is what it raised."""

    def __init__(self, where: str, cause: BaseException) -> None:
        super().__init__(f"{where}: {type(cause).__name__}: {_first_line(cause)}")
        self.where = where
        self.cause = cause


def main(args: argparse.Namespace) -> int:
    """The ``--dry-run`` of ``advaudio experiment``: print what ran, or one line naming the failing cell (exit 1)."""
    name = str(args.experiment)
    if args.tracking_uri:
        raise ConfigError("--dry-run logs to a throw-away store of its own: drop --tracking-uri")
    parent = Path(args.outputs) if args.outputs else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"advaudio-dry-run-{Path(name).stem}-", dir=parent))
    print(f"dry run of {name} in {folder}", flush=True)
    started = time.monotonic()
    try:
        for line in dry_run(name, parse_overrides(args.overrides), folder, executor=args.executor,
                            ray_address=args.ray_address, cover=args.cover, show_progress=not args.no_progress,
                            quiet=not args.verbose):
            print(line, flush=True)
    except CellFailed as err:
        if args.verbose:
            traceback.print_exception(err.cause)
        print(f"advaudio experiment: dry run failed in {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"dry run passed in {time.monotonic() - started:.0f} s: every cell ran")
    return 0


def dry_run(experiment: str, overrides: dict[str, Any], folder: Path, *, executor: str = "local",
            ray_address: str | None = None, cover: bool = False, show_progress: bool = False,
            quiet: bool = True) -> Iterator[str]:
    """Run the dry run of ``experiment`` (with command-line ``overrides``) in ``folder``, yielding what each part
    did as lines of text. ``cover`` runs a grid's cells end to end only in the model columns that cover every data
    set, front-end, backbone and seed (:meth:`defense.dryrun_grid.GridDry.groups`). ``quiet`` hides the warnings
    of the end-to-end part (the sanity checks of models trained for one epoch on a few clips warn as they should).

    Raises:
        CellFailed: naming the cell or step that failed.
        ConfigError: for a config that does not load (as the real run would).
    """
    raw = _read(experiment)
    if "study" in raw:
        target: Any = STUDIES.get(str(raw["study"])).dry(raw, overrides)
    else:
        target = GridDry(load_grid(experiment, overrides), executor, ray_address, cover)
    data: dict[str, DryData] = {}
    window = target.window()
    for cfg in target.datasets():
        if key_of(cfg) not in data:
            seconds = clip_seconds(cfg, window)
            data[key_of(cfg)] = _step(f"data set {cfg['name']}", lambda: prepare(cfg, folder, seconds))
            yield f"data: {data[key_of(cfg)].note}"
    checks, frontends = [], {}
    for label, dataset, frontend, victim in target.models():
        dry = data[key_of(dataset)]
        splits = _step(f"data set {dataset['name']} (loading it at its real clip settings)", dry.splits)
        checks.append(_step(f"the full-size check of {label}",
                            lambda: check_model(label, frontend, victim, splits, frontends)))
    target.sized(checks)
    largest = max(checks, key=lambda c: c.input_shape[0] * c.input_shape[1])
    yield (f"models at full size: {len(checks)} (data set, front-end, backbone) forward and backward; largest input "
           f"{largest.describe()}")
    tracker = _Tracker(target.steps(), show_progress)
    try:
        with _quiet(quiet):
            target.run(data, folder, tracker)
    except Exception as err:  # the cell that raised is named from the running frames
        raise CellFailed(_cell_of(err, tracker.last), err) from err
    finally:
        tracker.close()
    uri = store_uri(folder / "outputs")
    for line in _step("the check of the store", lambda: target.check(uri)):
        yield f"cells end to end: {line}"
    yield f"report: {_step('the report', lambda: target.report(uri, folder))}; UI view saved"


def _read(experiment: str) -> dict[str, Any]:
    path = Path(experiment)
    return read_yaml(path) if path.suffix in (".yaml", ".yml") else load_option("experiment", experiment)


def _step(where: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as err:
        raise CellFailed(where, err) from err


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """Log errors only, while ``quiet`` (MLflow's and alembic's loggers set their own level: each throw-away
    store's creation would log two lines)."""
    loggers = [logging.getLogger(name) for name in ("", "mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    if quiet:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class _Tracker:
    """Progress callback of the end-to-end part: keeps the last message (the step under way) and moves a bar."""

    def __init__(self, total: int, show: bool) -> None:
        from tqdm import tqdm

        self.last = ""
        self.bar = tqdm(total=total or None, desc="dry run", unit="step", disable=not show)

    def __call__(self, message: str, advance: bool = True) -> None:
        self.last = message
        self.bar.set_postfix_str(message, refresh=not advance)
        if advance:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


CELL_LOCALS = {"column": None, "defense": "defense", "option": "attack", "mode": "mode", "model": "model",
               "label": "attack", "spec": "row", "fold": "fold", "name": "model"}
"""Locals of the runner's and the studies' frames that name the cell being run, and what they are called."""
CELL_FRAMES = ("run_column", "evaluate_cell", "wrap_model", "certify_smoothed", "_attack", "_attack_run", "_transfer",
               "_run_fold", "train", "_evaluation")
"""Functions of the grid's column and cells (:mod:`defense.column`, :mod:`defense.attack_cell`,
:mod:`defense.inference_cells`) and of the studies whose locals say which cell runs."""
CELL_MODULES = ("defense.column", "defense.attack_cell", "defense.inference_cells", "experiments.")


def _cell_of(err: BaseException, last: str) -> str:
    """The cell an exception from the end-to-end part came from: the coordinates the runner's (or a study's) frames
    hold, inner frames winning, and the step under way (the last progress message)."""
    found: dict[str, str] = {}
    for frame, _ in traceback.walk_tb(err.__traceback__):
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(CELL_MODULES) or frame.f_code.co_name not in CELL_FRAMES:
            continue
        values = frame.f_locals
        column = values.get("column")
        if column is not None and hasattr(column, "dataset"):
            found.update(dataset=column.dataset, frontend=column.frontend, victim=column.victim,
                         seed=f"seed {column.seed}")
        if frame.f_code.co_name == "run_column":  # its loop variables may be stale: the inner frames say more
            found.pop("attack", None)
        for local, key in CELL_LOCALS.items():
            value = values.get(local)
            if key is None or value is None or (local == "option" and frame.f_code.co_name == "run_column"):
                continue
            found[key] = str(getattr(value, "name", value)) if local == "spec" else str(value)
    order = ("dataset", "frontend", "victim", "defense", "attack", "mode", "model", "row", "fold", "seed")
    cell = " / ".join(found[k] for k in order if found.get(k))
    step = f" ({last})" if last else ""
    return (cell or "the end-to-end run") + step


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
