"""Seed 004's Tables I, II and III rebuilt from MLflow alone (CSV, Markdown, terminal), with intervals.

Seed 004 (*Adversarially training for audio classifiers*, Section VIII) reports, for every data set ×
representation (rows) and victim architecture (columns):

- Table I: test accuracy (%) of the original model and, in parentheses, its drop in percentage points
  after adversarial training: ``"88.32, (10.35)"``; the parenthesis is left out when the defended
  model is missing.
- Table II: fooling AUC (%) averaged over the attacks, of the adversarially trained models
  (``model="original"``: the same for the original models), over ``[0, ε_max]`` of each norm.
- Table III: ε_r (Eq. 15) averaged over the attacks whose ε_r is complete; ``*`` marks a cell where
  none is, so the mean is over partial ratios (a model never reached FR ≥ 0.9, so each is a lower
  bound, see :mod:`evaluation.metrics`). Each cell reads ``ε_r [low, high] v`` with the verdict v:
  ↑ (interval above 1), ↓ (below 1), ≈ (contains 1), ``?`` (undetermined: fewer than
  :data:`evaluation.stats.N_MIN` clips in the smaller base set), followed by ``n=`` those clips.

Budgets belong to a norm: Tables II-III have one row per (data set, representation, attack group),
where a group is the table attacks of one domain and norm (seed 004's rows are the representation-L2
ones) and every attack left out of the tables (baselines: noise, FGSM) has a row of its own.
Intervals: a paired bootstrap over the evaluation clips (:mod:`evaluation.intervals`), one draw shared by
every attack of a cell, read from each attack run's per-clip record (``evaluation.json``); where a grid
repeats training seeds, each cell is the mean over seeds with the Student-t interval across seeds
(``n`` seeds shown), and ``table_3_<defense>_seed<k>`` keeps every seed's bootstrap table.

Beyond seed 004: Table IV (:mod:`evaluation.report_listening`), whether the waveform attacks' examples are audible
and survive a room, where the runs scored them.

The runs come from :mod:`evaluation.report_data`, the numbers from :mod:`evaluation.report_tables`;
this module renders them (terminal, Markdown, CSV).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from evaluation import stats
from evaluation.defense_table import comparison_sections
from evaluation.ensemble import WEAK_SHARE
from evaluation.report_data import ROWS, WORST_CASE, ReportData
from evaluation.report_listening import listening_caption, listening_table
from evaluation.report_tables import (CELL, WEAK_MARK, Model, per_attack, seed_mean, table_1_values, table_2_values,
                                      table_3_values, with_interval)
from evaluation.tracking import ORIGINAL
from evaluation.transfer import transfer_rates
from training.files import atomic_write

log = logging.getLogger(__name__)


def render(index: pd.MultiIndex, victims: list[str], cell: Any) -> pd.DataFrame:
    """String table with one column per index level; ``cell(row_key, victim)`` → str."""
    out = pd.DataFrame({name: index.get_level_values(name) for name in index.names})
    for victim in victims:
        out[victim] = [cell(key, victim) for key in index]
    return out


def table_1(data: ReportData, defense: str | None = None) -> pd.DataFrame:
    """Seed 004's Table I: ``"acc_orig [low, high], (drop)"`` in percent, drop = original − defended
    accuracy; the interval is the logged Wilson interval of one seed, or the t-interval across seeds."""
    defense = data.resolve(defense)
    long = table_1_values(data, defense).set_index([*CELL, "defense"])

    def cell(key: tuple[str, str], victim: str) -> str:
        orig, adv = (key[0], key[1], victim, ORIGINAL), (key[0], key[1], victim, defense)
        if orig not in long.index:
            return ""
        o = long.loc[orig]
        text = with_interval(o["value"], o["low"], o["high"], 2, int(o["n"]))
        return text if adv not in long.index else f"{text}, ({o['value'] - long.loc[adv, 'value']:.2f})"

    return render(data.rows, data.victims, cell)


def render_cells(data: ReportData, cells: pd.DataFrame, digits: int, verdict: bool, attacks: Sequence[str] | None,
                 seed: str | None = None) -> pd.DataFrame:
    """Render per-seed cells: one seed, or the mean and t-interval across seeds."""
    if seed is not None:
        cells = cells[cells["seed"] == seed]
    index = data.table_rows(attacks)
    grouped = {k: g for k, g in cells.groupby([*ROWS, "victim"])}

    def cell(key: tuple[str, str, str], victim: str) -> str:
        g = grouped.get((*key, victim))
        if g is None or g.empty:
            return ""
        value, low, high, n = seed_mean(list(g["value"]), list(zip(g["low"], g["high"])))
        return (with_interval(value, low, high, digits, n, verdict, float(g["n"].min()))
                + ("*" if g["partial"].any() else "")
                + (WEAK_MARK if g["weak"].any() else ""))

    return render(index, data.victims, cell)


def table_2(data: ReportData, defense: str | None = None, *, model: Model = "defended",
            attacks: Sequence[str] | None = None, seed: str | None = None) -> pd.DataFrame:
    """Seed 004's Table II: mean fooling AUC (%) of the defended (or the original) models, ``[low, high]``."""
    return render_cells(data, table_2_values(data, defense, model=model, attacks=attacks), 2, False, attacks, seed)


def table_3(data: ReportData, defense: str | None = None, attacks: Sequence[str] | None = None,
            seed: str | None = None) -> pd.DataFrame:
    """Seed 004's Table III: ``ε_r [low, high] verdict`` per cell, three decimals; ``*`` marks a cell where
    no attack reached FR 0.9 on both models (a mean of lower bounds)."""
    return render_cells(data, table_3_values(data, defense, attacks), 3, True, attacks, seed)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub pipe table with aligned columns (``NaN`` → empty, ``|`` escaped)."""
    def text(value: Any) -> str:
        if isinstance(value, float) and math.isnan(value):
            return ""
        return str(value).replace("|", "\\|")

    header = [text(c) for c in frame.columns]
    body = [[text(v) for v in row] for row in frame.itertuples(index=False)]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def _budget_note(data: ReportData) -> str:
    runs = data.of_kind("attack")
    if runs.empty or "eps_max" not in runs:
        return "ε_max not logged"
    pairs = sorted({(g, float(e)) for g, e in zip(runs["attacks"], runs["eps_max"]) if math.isfinite(e)})
    return "ε_max: " + "; ".join(f"{g} {e:g}" for g, e in pairs) if pairs else "ε_max not logged"


def _sections(data: ReportData, attacks: Sequence[str] | None) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """``(file stem, caption, table)`` for every table of the report."""
    budget = _budget_note(data)
    level = f"{int(round(data.level * 100))} %"
    seeds = data.seeds
    across = (f"mean over {len(seeds)} training seeds [{level} t-interval across seeds] (n seeds)" if len(seeds) > 1
              else f"[{level} bootstrap interval over evaluation clips]")
    for defense in data.defenses or [None]:
        name = defense or ORIGINAL
        yield (f"table_1_{name}", f"Table I: test accuracy (%) of the original models, (drop in points with the "
               f"'{name}' defense)", table_1(data, defense))
        if defense is not None:
            yield (f"table_2_{name}", f"Table II: mean fooling AUC (%) over each row's attacks of the '{name}' "
                   f"models, {across} ({budget})", table_2(data, defense, attacks=attacks))
            yield (f"table_3_{name}", f"Table III: ε_r ('{name}' / original, Eq. 15); the '{WORST_CASE[2:]}' row "
                   "of each group takes each clip's smallest ε* over the group's attacks (AutoAttack's principle), "
                   "the group's row averages ε_r over its attacks where both models reach FR 0.9 (seed 004), then "
                   f"each attack; {across}; ↑ interval above 1, ↓ below, ≈ contains 1, {stats.UNDETERMINED} "
                   f"undetermined: fewer than {stats.N_MIN} clips in a model's base set, where the bootstrap "
                   "interval falls short of its level; n=… clips in the smaller base set, (n=…) seeds "
                   "(* = no attack reaches 0.9: a mean of lower bounds; no interval = undetermined, more than "
                   f"5 % of the draws undefined, too few broken clips; {WEAK_MARK} = an attack broke fewer than "
                   f"{WEAK_SHARE:.0%} of a model's base set: its ε* describe the easy clips only)",
                   table_3(data, defense, attacks))
            if len(seeds) > 1:
                for seed in seeds:
                    yield (f"table_3_{name}_seed{seed}", f"Table III, training seed {seed}: ε_r [{level} paired "
                           "bootstrap interval over evaluation clips]", table_3(data, defense, attacks, seed))
    yield ("table_2_original", f"Table II (original models): mean fooling AUC (%) over each row's attacks, "
           f"{across} ({budget})", table_2(data, model="original", attacks=attacks))
    yield from comparison_sections(data, attacks)
    listening = listening_table(data)
    if not listening.empty:
        yield ("table_4_listening", listening_caption(data.level), listening)
    yield from transfer_sections(data)


def transfer_sections(data: ReportData) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """Seed 001's Table 5 between the grid's models of each data set, representation and seed, per attack:
    ``T[a→b] [low, high] (n)`` with rows = the model tested on, columns = the model the examples were crafted on."""
    level = f"{int(round(data.level * 100))} %"
    for coords, record in data.transfers:
        rates = transfer_rates([record], n_boot=data.n_boot, level=data.level)
        table = rates["value"].astype(object)
        for b in table.index:
            for a in table.columns:
                value = rates["value"].at[b, a]
                table.at[b, a] = "NA" if a == b else with_interval(
                    100 * value, 100 * rates["low"].at[b, a], 100 * rates["high"].at[b, a], 1) + \
                    f" (n={int(rates['n'].at[b, a])})"
        stem = "_".join(["transfer", coords["dataset"], coords["frontend"], f"seed{coords['seed']}", coords["attack"]])
        yield (stem, f"Transfer (seed 001, Table 5) of {coords['attack']} examples between the models of "
               f"{coords['dataset']} / {coords['frontend']}, seed {coords['seed']}: % of the examples crafted on the "
               "column's model (fooling it, from its base set) that fool the row's model, among clips it classifies "
               f"correctly [{level} bootstrap interval over clips] (n = examples counted). Seed 001 found 0-10 %.",
               table.reset_index())


def write_tables(data: ReportData, out_dir: Path, attacks: Sequence[str] | None = None) -> list[Path]:
    """Write every table as ``.csv`` and ``.md`` (caption + pipe table) plus ``per_attack.csv``.

    Files: ``table_{1,2,3}_<defense>`` per defense (only ``table_1_none`` when there is none),
    ``table_2_original``, ``defense_comparison`` (when there is a defense, :mod:`evaluation.defense_table`),
    the transfer tables and ``per_attack.csv``.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for stem, caption, table in _sections(data, attacks):
        paths += [_write_text(out_dir / f"{stem}.csv", table.to_csv(index=False)),
                  _write_text(out_dir / f"{stem}.md", f"**{caption}**\n\n{to_markdown(table)}\n")]
    paths.append(_write_text(out_dir / "per_attack.csv", per_attack(data, attacks).to_csv(index=False)))
    log.info("wrote %d report files to %s", len(paths), out_dir)
    return paths


def _write_text(path: Path, text: str) -> Path:
    """Write a report file whole or not at all (UTF-8)."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), "report file")


def format_tables(data: ReportData, attacks: Sequence[str] | None = None) -> str:
    """All tables as captioned Markdown text, for the terminal."""
    return "\n\n".join(f"{caption}\n\n{to_markdown(table)}" for _, caption, table in _sections(data, attacks))
