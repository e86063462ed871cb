"""The leaderboard study (issue 21 item 5): every defense × backbone trained on a data set and benchmarked under
each of its threat models, the audio counterpart of RobustBench's model zoo (Croce et al. 2021).

``advaudio experiment leaderboard_fsdd`` goes model by model, the reference defense's model of each backbone first
(its entry is the ε_r reference of the other models of that backbone): it trains the model with
:func:`defense.pipeline.train_from_config` (keyed by its config: a rerun reuses a finished training and resumes an
interrupted one) and benchmarks it under every threat model with :func:`leaderboard.benchmark.benchmark` (the
per-clip worst case over the threat model's attacks, adaptive behind a smoothed model's noise, certified when
smoothed). Entries are written to ``<outputs>/leaderboard/<experiment>/<threat model>/<defense>_<backbone>.json`` and
each threat model's page (:func:`leaderboard.page.write_pages`: ``index.html``, ``leaderboard.md``, ``scatter.svg``)
beside them, rendered again after every entry, so an interrupted study leaves pages of the models done so far.

MLflow layout (experiment tagged ``advaudio.study=leaderboard``): one parent run (``advaudio.kind=study``, keyed by
the resolved config, with ``study.yaml``), the training runs nested under it, and one ``entry`` run per model and
threat model (keyed by the threat model's config hash, the model's training key and its reference's), holding the
entry as ``entry.json``, its metrics and the id of the benchmark's own run (experiment ``leaderboard``). A rerun skips
finished entry runs; an entry file that is valid for the current threat model, checkpoint and reference is reused
rather than benchmarked again. ``report`` rebuilds the pages from the entry runs alone.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import mlflow

from defense.pipeline import TrainedVictim, train_from_config
from defense.studies import STUDY_TAG
from evaluation.tracking import (artifact_json, default_tracking_uri, find_run, flatten, is_finished, resumable_run,
                                 stable_key, tag)
from experiments.leaderboard.config import STUDY, ModelSpec, Study, load_study
from experiments.leaderboard.report import ENTRY_ARTIFACT, ENTRY_KIND, board_of, log_pages
from experiments.shared import finish_parent, parent_run, study_experiment
from leaderboard.benchmark import benchmark
from leaderboard.card import sha256
from leaderboard.entry import EntryError, load_entry, write_entry
from leaderboard.page import write_pages
from leaderboard.threat_model import ThreatModel
from training.data import load_splits
from training.files import writable_folder

log = logging.getLogger(__name__)


def entries_folder(outputs: Path, experiment: str, threat_model: str) -> Path:
    """Where the study writes a threat model's entries and page."""
    return Path(outputs) / "leaderboard" / experiment / threat_model


def run(raw: dict, overrides: dict, *, tracking_uri: str | None, outputs: Path, progress: Callable[..., None]) -> str:
    """Train every model, benchmark it under every threat model (skipping finished entries), render the pages and
    log everything to MLflow; return the experiment. ``progress`` is called once per model trained and per entry,
    and with ``advance=False`` for each step inside a benchmark (the command line's bar shows it).

    Raises:
        ConfigError: for a bad configuration (see :func:`experiments.leaderboard.config.load_study`).
    """
    study = load_study(raw, overrides)
    uri = tracking_uri or default_tracking_uri(outputs)
    exp_id = study_experiment(study.name, STUDY, uri, outputs)
    splits = load_splits(next(iter(study.models.values())).config["dataset"])
    parent_id = parent_run(exp_id, study.key, study.name, STUDY, study.source, "study.yaml")
    trained: dict[str, TrainedVictim] = {}
    folders = {tm: writable_folder(entries_folder(outputs, study.name, tm), "entries folder")
               for tm in study.threat_models}
    entries: dict[str, dict[str, dict[str, Any]]] = {tm: {} for tm in study.threat_models}
    for name, model in study.models.items():  # model by model: an interrupted study has whole rows on every page
        trained[name] = train_from_config(model.config, experiment=study.name, tracking_uri=uri, outputs=outputs,
                                          splits=splits, parent_run_id=parent_id,
                                          extra_tags={STUDY_TAG: STUDY, tag("model"): name})
        progress(f"trained {name}")
        for tm_name, tm in study.threat_models.items():
            folder = folders[tm_name]
            entry = _entry(exp_id, parent_id, study, tm, model, trained, folder, uri, outputs, progress)
            if not (folder / f"{name}.json").is_file():  # read back from MLflow: the folder holds every entry
                write_entry(entry, folder / f"{name}.json")
            entries[tm_name][name] = entry
            write_pages(board_of(entries[tm_name], tm), folder)
            progress(f"benchmarked {name} under {tm_name}")
    for tm_name, tm in study.threat_models.items():
        log_pages(parent_id, tm_name, write_pages(board_of(entries[tm_name], tm), folders[tm_name]))
    finish_parent(parent_id)
    return study.name


def _entry(exp_id: str, parent_id: str, study: Study, tm: ThreatModel, model: ModelSpec,
           trained: dict[str, TrainedVictim], folder: Path, uri: str, outputs: Path,
           progress: Callable[..., None]) -> dict[str, Any]:
    """The entry of ``model`` under ``tm``: read back from its finished entry run, or benchmarked (or taken from a
    valid entry file) and logged as one."""
    tv = trained[model.name]
    ref = study.reference_of(model)
    key = stable_key([tm.config_hash, tv.key, trained[ref.name].key if ref is not None else None])
    found = find_run(exp_id, tag("cell_key"), key)
    if found is not None and is_finished(found):
        return _logged_entry(found.info.run_id)
    path = folder / f"{model.name}.json"
    reference = str(folder / f"{ref.name}.json") if ref is not None else None
    entry = _valid_file(path, tm, tv.checkpoint, ref.name if ref is not None else None)
    if entry is None:
        done = benchmark(tv.checkpoint, str(study.threat_model_sources[tm.name]), name=model.name,
                         reference=reference, outputs=outputs, entries=folder, tracking_uri=uri,
                         data_root=study.data_root, progress=lambda line: progress(f"{model.name}/{tm.name}: {line}",
                                                                                    advance=False))
        entry = done.entry
        mlflow.set_experiment(experiment_id=exp_id)  # the benchmark selected its own experiment (leaderboard)
    run_tags = {tag("kind"): ENTRY_KIND, STUDY_TAG: STUDY, tag("threat_model"): tm.name, tag("model"): model.name,
                "mlflow.parentRunId": parent_id}
    with resumable_run(exp_id, "cell_key", key, run_name=f"{tm.name}/{model.name}", tags=run_tags,
                       what=f"study {study.name}: entry {model.name} under {tm.name}") as run:
        if not run.finished:
            mlflow.log_params(flatten({"threat_model": entry["threat_model"], "backbone": model.backbone,
                                       "defense": model.defense, "train_run": tv.run_id}))
            mlflow.set_tag(tag("benchmark_run"), str(entry["evaluation"]["mlflow_run_id"]))
            mlflow.log_metrics(_metrics(entry))
            mlflow.log_dict(entry, ENTRY_ARTIFACT)
    return entry


def _valid_file(path: Path, tm: ThreatModel, checkpoint: Path, reference: str | None) -> dict[str, Any] | None:
    """The entry in ``path`` if it was made under ``tm``'s current config, of ``checkpoint`` as it is now, against
    ``reference``; else ``None`` (it is benchmarked again)."""
    if not path.is_file():
        return None
    try:
        entry = load_entry(path, tm.config_hash)
    except EntryError as err:
        log.warning("benchmarking again: %s", err)
        return None
    eps_r = entry["metrics"].get("eps_r")
    if entry["model"].get("checkpoint_sha256") != sha256(checkpoint) or \
            (eps_r or {}).get("reference") != reference:
        log.warning("benchmarking again: %s is of another checkpoint or reference", path)
        return None
    return entry


def _logged_entry(run_id: str) -> dict[str, Any]:
    return artifact_json(run_id, ENTRY_ARTIFACT)


def _metrics(entry: dict[str, Any]) -> dict[str, float]:
    """The entry's metrics and their interval ends (null ones left out), and its clip count."""
    out = {"n_clips": float(entry["evaluation"]["n_clips"])}
    for key, found in entry["metrics"].items():
        for part, suffix in (("value", ""), ("low", "_ci_low"), ("high", "_ci_high")):
            if found is not None and found.get(part) is not None:
                out[key + suffix] = float(found[part])
    return out
