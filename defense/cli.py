"""``advaudio``: the command line. Each step has ``--help``; errors are one line on stderr.

Configs are composed from ``configs/`` (see ``victims/config.py``); trailing ``key=value``
arguments override them, e.g. ``advaudio train victim=resnet34 train.epochs=5``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from victims.registry import ConfigError

log = logging.getLogger("advaudio")
Handler = Callable[[argparse.Namespace], int]
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ValueError, FileNotFoundError)


def _add_config_args(p: argparse.ArgumentParser, default_experiment: str) -> None:
    p.add_argument("-e", "--experiment", default=default_experiment,
                   help=f"experiment option in configs/experiment/ or a YAML path (default: {default_experiment})")
    p.add_argument("--outputs", type=Path, default=None, help="folder for caches, checkpoints and the MLflow store")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under --outputs)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.epochs=5 or frontend=mel_db")


def _compose(args: argparse.Namespace) -> dict:
    from victims.config import compose, parse_overrides

    return compose(args.experiment, parse_overrides(args.overrides))


def _outputs(args: argparse.Namespace) -> Path:
    from evaluation.tracking import OUTPUTS

    return args.outputs or OUTPUTS


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
                             outputs=_outputs(args))
    res = done.result
    print(f"test accuracy {res.test_accuracy:.4f} (best epoch {res.best_epoch}, {len(res.history)} epochs"
          f"{', stopped early' if res.stopped_early else ''})")
    print(f"checkpoint: {done.checkpoint}")
    print(f"MLflow run: {done.run_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advaudio", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="decode/render and cache a data set", description=cmd_prepare.__doc__)
    _add_config_args(p, "train")
    p.set_defaults(handler=cmd_prepare)

    p = sub.add_parser("train", help="train one victim (tracked in MLflow)", description=cmd_train.__doc__)
    _add_config_args(p, "train")
    p.add_argument("--mlflow-experiment", default="advaudio", help="MLflow experiment name (default: advaudio)")
    p.set_defaults(handler=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``advaudio`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    handler: Handler = args.handler
    try:
        return handler(args)
    except USER_ERRORS as err:
        print(f"advaudio {args.command}: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
