"""The leaderboard study's pages, rebuilt from its MLflow entry runs alone.

Each ``entry`` run of the study's newest parent run holds one entry (``entry.json``, the file
:func:`leaderboard.benchmark.benchmark` wrote); :func:`report` groups them by threat model and renders each group
with :mod:`leaderboard.page` (ranked by robust accuracy; the header says whether the leader's interval clears the
runner-up's) into ``<outputs>/reports/<experiment>/<threat model>/``, and returns each page's header and table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mlflow.tracking import MlflowClient

from evaluation.stored import open_experiment
from evaluation.tracking import artifact_json, iter_runs, tag
from leaderboard.page import Board, render_markdown, write_pages
from leaderboard.threat_model import ThreatModel
from victims.registry import ConfigError

ENTRY_KIND = "entry"
"""``advaudio.kind`` of the study's run per model and threat model."""
ENTRY_ARTIFACT = "entry.json"
CARDS = "\n## Model cards"
"""Where a page's Markdown turns from the table to the model cards."""


def board_of(entries: Mapping[str, dict[str, Any]], tm: ThreatModel | None = None) -> Board:
    """The ranked board of one threat model's entries (model name -> entry).

    Raises:
        ConfigError: one line: an entry made under another config of ``tm`` than its current one, or any refusal
            of :meth:`leaderboard.page.Board.of`.
    """
    board = Board.of({f"{name}.json": entry for name, entry in entries.items()})
    if tm is not None and board.threat_model["config_hash"] != tm.config_hash:
        raise ConfigError(f"the entries of {tm.name} were made under config hash {board.threat_model['config_hash']}, "
                          f"its current one is {tm.config_hash}")
    return board


def log_pages(parent_id: str, threat_model: str, pages: list[Path]) -> None:
    """The page files as artifacts of the study's parent run (``pages/<threat model>/``)."""
    client = MlflowClient()
    for page in pages:
        client.log_artifact(parent_id, str(page), f"pages/{threat_model}")


def _latest_study(exp_id: str, client: MlflowClient) -> str:
    runs = sorted(iter_runs(exp_id, f"tags.`{tag('kind')}` = 'study'", client), key=lambda r: r.info.start_time)
    if not runs:
        raise ConfigError(f"experiment {exp_id} holds no leaderboard study run; run `advaudio experiment "
                          "leaderboard_fsdd`")
    return runs[-1].info.run_id


def collect(exp_id: str, client: MlflowClient) -> dict[str, dict[str, dict[str, Any]]]:
    """Threat model -> model name -> entry, of the finished entry runs under the newest study run."""
    parent = _latest_study(exp_id, client)
    found: dict[str, dict[str, dict[str, Any]]] = {}
    query = f"tags.`{tag('kind')}` = '{ENTRY_KIND}' and tags.`mlflow.parentRunId` = '{parent}'"
    for run in iter_runs(exp_id, query, client):
        if run.data.tags.get(tag("status")) != "finished":
            continue
        entry = artifact_json(run.info.run_id, ENTRY_ARTIFACT, client)
        found.setdefault(entry["threat_model"]["name"], {})[entry["model"]["name"]] = entry
    if not found:
        raise ConfigError(f"study run {parent} has no finished entry runs yet; run the experiment")
    return found


def report(experiment: str, tracking_uri: str | None, outputs: Path) -> str:
    """Rebuild every threat model's page from MLflow alone into ``outputs/reports/<experiment>/<threat model>/``;
    return each page's header and table (a missing store or experiment, or one without a study run, is a
    ConfigError that creates nothing)."""
    exp_id = open_experiment(experiment, tracking_uri, outputs, kinds=("study",)).experiment_id
    client = MlflowClient()
    text = []
    for name, entries in sorted(collect(exp_id, client).items()):
        folder = Path(outputs) / "reports" / experiment / name
        board = board_of(entries)
        write_pages(board, folder)
        text.append(render_markdown(board, scatter=None).split(CARDS)[0].rstrip()
                    + f"\n\npage written to {folder / 'index.html'}")
    return "\n\n".join(text)

