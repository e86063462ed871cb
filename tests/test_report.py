"""Tables I–III rebuilt from a real (temporary) MLflow SQLite store filled with hand-chosen numbers."""
from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from evaluation import report as R
from evaluation import report_data as D
from evaluation import report_tables as T
from evaluation.examples import Example, choose_clip, pick
from evaluation.tracking import downloaded
from victims.registry import ConfigError

STFT, CWT = "stft_db_small", "cwt_tonnetz_small"
DS = "gm_instruments"
ATTACKS = ("bim_a", "nes_pia")

# (representation, victim) -> test accuracy of (original, fgsm_mix); None = no training run.
ACCURACY = {
    (STFT, "alexnet"): (0.8832, 0.7797),     # 88.32, (10.35) as in seed 004's Table I
    (STFT, "resnet18"): (0.9000, 0.9125),    # adversarial training raised accuracy: negative drop
    (CWT, "alexnet"): (None, 0.5000),        # original missing: empty cell
    (CWT, "resnet18"): (0.7000, None),       # defended missing: no parenthesis
}
# (representation, victim, attack) -> (original summary, defended summary); None = no attack run.
INF = math.inf
ATTACK_RUNS = {
    (STFT, "alexnet", "bim_a"): (dict(fooling_auc=0.80, eps_090=0.5, mean_eps_star_within_eps090=0.25),
                                 dict(fooling_auc=0.40, eps_090=1.0, mean_eps_star_within_eps090=0.25, eps_r=1.0,
                                      eps090_ratio=2.0, eps_r_partial=0.0)),
    # eps_r not logged on the defended run: computed from the summaries, 0.6 / 0.2 = 3
    (STFT, "alexnet", "nes_pia"): (dict(fooling_auc=0.90, eps_090=0.3, mean_eps_star_within_eps090=0.2,
                                        mean_total_queries=812.0, median_queries=640.0),
                                   dict(fooling_auc=0.70, eps_090=0.9, mean_eps_star_within_eps090=0.6)),
    (STFT, "resnet18", "bim_a"): (dict(fooling_auc=0.85, eps_090=0.4, mean_eps_star_within_eps090=0.2),
                                  dict(fooling_auc=0.50, eps_090=1.2, mean_eps_star_within_eps090=0.3, eps_r=1.5,
                                       eps090_ratio=3.0, eps_r_partial=0.0)),
    (STFT, "resnet18", "nes_pia"): (dict(fooling_auc=0.95, eps_090=0.2, mean_eps_star_within_eps090=0.1),
                                    dict(fooling_auc=0.60, eps_090=0.5, mean_eps_star_within_eps090=0.25, eps_r=2.5,
                                         eps090_ratio=2.5, eps_r_partial=0.0)),
    # a partial eps_r next to complete ones is left out of Table III's mean (AUCs keep the Table II means)
    (STFT, "resnet18", "cw_l2"): (dict(fooling_auc=0.90, eps_090=0.4, mean_eps_star_within_eps090=0.2),
                                  dict(fooling_auc=0.55, eps_090=INF, mean_eps_star_within_eps090=0.02, eps_r=0.1,
                                       eps090_ratio=INF, eps_r_partial=1.0)),
    # the defended model never reaches FR 0.9: eps_090 = inf (stored as the largest float), partial eps_r
    (CWT, "resnet18", "bim_a"): (dict(fooling_auc=0.70, eps_090=1.0, mean_eps_star_within_eps090=0.5),
                                 dict(fooling_auc=0.20, eps_090=INF, mean_eps_star_within_eps090=0.6, eps_r=1.2,
                                      eps090_ratio=INF, eps_r_partial=1.0)),
    (CWT, "resnet18", "nes_pia"): (dict(fooling_auc=0.75, eps_090=1.0, mean_eps_star_within_eps090=0.5), None),
    (CWT, "alexnet", "bim_a"): (None, dict(fooling_auc=0.30, eps_090=2.0, mean_eps_star_within_eps090=1.0)),
}


def _run(client: MlflowClient, exp: str, tags: dict[str, str], metrics: dict[str, float], *, start: int,
         parent: str | None = None, finished: bool = True) -> str:
    all_tags = {f"advaudio.{k}": v for k, v in tags.items()}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    if finished:
        all_tags["advaudio.status"] = "finished"
    run_id = client.create_run(exp, start_time=start, tags=all_tags).info.run_id
    client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    if finished:
        client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("demo", artifact_location=(root / "artifacts").as_uri())
    grid = _run(client, exp, {}, {}, start=1)  # the grid's parent run: no kind, ignored
    clock = iter(range(10, 10_000))
    train_ids: dict[tuple[str, str, str], str] = {}
    for (rep, victim), accs in ACCURACY.items():
        for defense, acc in zip(("none", "fgsm_mix"), accs):
            if acc is not None:
                tags = dict(kind="train", dataset=DS, frontend=rep, victim=victim, defense=defense)
                train_ids[rep, victim, defense] = _run(client, exp, tags, {"test_accuracy": acc, "test_loss": 0.5},
                                                       start=next(clock), parent=grid)
    for (rep, victim, attack), summaries in ATTACK_RUNS.items():
        for defense, summary in zip(("none", "fgsm_mix"), summaries):
            if summary is not None:
                tags = dict(kind="attack", dataset=DS, frontend=rep, victim=victim, defense=defense, attack=attack)
                _run(client, exp, tags, {**summary, "eps_max": 3.0, "sanity.monotone": 1.0}, start=next(clock),
                     parent=train_ids.get((rep, victim, defense)))
    # a newer run of the same cell killed mid-way (no finished tag, still RUNNING): must be ignored
    killed = dict(kind="attack", dataset=DS, frontend=STFT, victim="resnet18", defense="fgsm_mix", attack="bim_a")
    _run(client, exp, killed, {"fooling_auc": 0.99}, start=next(clock), finished=False)
    return uri


@pytest.fixture(scope="module")
def data(store: str) -> D.ReportData:
    return D.collect("demo", store)


def _cell(table: pd.DataFrame, rep: str, victim: str) -> str:
    """Table I's cell, or a Table II/III cell of the one attack group these runs form (no norm tags: "all")."""
    if "attacks" not in table:
        return table.set_index(D.ROWS[:2]).at[(DS, rep), victim]
    return table.set_index(D.ROWS).at[(DS, rep, "all"), victim]


def test_collect_reads_one_row_per_run(data: D.ReportData) -> None:
    runs = data.runs
    n_train = sum(a is not None for accs in ACCURACY.values() for a in accs)
    n_attack = sum(s is not None for pair in ATTACK_RUNS.values() for s in pair)
    assert (runs["kind"] == "train").sum() == n_train
    assert (runs["kind"] == "attack").sum() == n_attack
    assert data.defenses == ["fgsm_mix"] and data.victims == ["alexnet", "resnet18"]
    assert list(data.rows) == [(DS, CWT), (DS, STFT)]
    killed = runs[(runs["frontend"] == STFT) & (runs["victim"] == "resnet18") & (runs["defense"] == "fgsm_mix")
                  & (runs["attack"] == "bim_a")]
    assert killed["fooling_auc"].tolist() == [0.50]
    partial = runs[(runs["frontend"] == CWT) & (runs["defense"] == "fgsm_mix") & (runs["attack"] == "bim_a")
                   & (runs["victim"] == "resnet18")]
    assert partial["eps_090"].tolist() == [INF]
    orphans = 1  # (CWT, resnet18, fgsm_mix, bim_a) has no training run to nest under
    assert runs.loc[runs["kind"] == "attack", "parent_run_id"].ne("").sum() == n_attack - orphans


def test_table_1_accuracy_and_drop(data: D.ReportData) -> None:
    t1 = R.table_1(data, "fgsm_mix")
    assert list(t1.columns) == ["dataset", "representation", "alexnet", "resnet18"]
    assert _cell(t1, STFT, "alexnet") == "88.32, (10.35)"
    assert _cell(t1, STFT, "resnet18") == "90.00, (-1.25)"
    assert _cell(t1, CWT, "alexnet") == ""
    assert _cell(t1, CWT, "resnet18") == "70.00"
    assert R.table_1(data).equals(t1)  # the only defended model is picked by default


def test_table_2_mean_auc_over_attacks(data: D.ReportData) -> None:
    t2 = R.table_2(data, "fgsm_mix")
    assert _cell(t2, STFT, "alexnet") == "55.00"          # (40 + 70) / 2
    assert _cell(t2, STFT, "resnet18") == "55.00"         # (50 + 60) / 2, the killed run's 99 ignored
    assert _cell(t2, CWT, "resnet18") == "20.00"          # only bim_a on the defended model
    assert _cell(t2, CWT, "alexnet") == "30.00"
    orig = R.table_2(data, model="original")
    assert _cell(orig, STFT, "alexnet") == "85.00"
    assert _cell(orig, STFT, "resnet18") == "90.00"
    assert _cell(orig, CWT, "resnet18") == "72.50"
    assert _cell(orig, CWT, "alexnet") == ""
    only_bim = T.table_2_values(data, "fgsm_mix", attacks=["bim_a"]).set_index([*D.ROWS, "victim"])
    assert only_bim.at[(DS, STFT, "all", "alexnet"), "value"] == pytest.approx(40.0)


def test_table_3_eps_r_mean_and_partial_mark(data: D.ReportData) -> None:
    found = T.table_3_matrices(data, "fgsm_mix")
    values, partial = found["value"], found["partial"]
    assert values.at[(DS, STFT, "all"), "alexnet"] == pytest.approx((1.0 + 3.0) / 2)
    assert values.at[(DS, STFT, "all"), "resnet18"] == pytest.approx((1.5 + 2.5) / 2)
    t3 = R.table_3(data, "fgsm_mix")
    assert _cell(t3, STFT, "alexnet") == "2.000"
    assert _cell(t3, CWT, "resnet18") == "1.200*"
    assert bool(partial.at[(DS, CWT, "all"), "resnet18"]) and not bool(partial.at[(DS, STFT, "all"), "resnet18"])
    assert _cell(t3, CWT, "alexnet") == ""                # no original model to compare with


def test_per_attack_long_table(data: D.ReportData) -> None:
    long = T.per_attack(data).set_index(["representation", "victim", "attack"])
    assert len(long) == len(ATTACK_RUNS)
    row = long.loc[(STFT, "alexnet", "nes_pia")]
    assert row["eps_r"] == pytest.approx(3.0) and row["eps090_ratio"] == pytest.approx(3.0)
    assert row["eps_r_partial"] == 0.0
    assert row["fooling_auc_original"] == pytest.approx(0.9) and row["fooling_auc_defended"] == pytest.approx(0.7)
    assert row["mean_total_queries_original"] == 812.0 and row["median_queries_original"] == 640.0  # black box
    assert math.isnan(long.loc[(CWT, "resnet18", "nes_pia"), "fooling_auc_defended"])
    assert (long["defense"] == "fgsm_mix").all()


def test_write_tables_csv_and_markdown(data: D.ReportData, tmp_path: Path) -> None:
    paths = R.write_tables(data, tmp_path / "tables")
    names = sorted(p.name for p in paths)
    expected = [f"table_{i}_fgsm_mix.{ext}" for i in (1, 2, 3) for ext in ("csv", "md")]
    assert names == sorted(expected + ["table_2_original.csv", "table_2_original.md", "per_attack.csv",
                                       "defense_comparison.csv", "defense_comparison.md"])
    assert all(p.is_file() for p in paths)
    csv = pd.read_csv(tmp_path / "tables" / "table_1_fgsm_mix.csv", keep_default_na=False)
    assert csv.equals(R.table_1(data, "fgsm_mix"))
    md = (tmp_path / "tables" / "table_3_fgsm_mix.md").read_text().splitlines()
    assert md[0].startswith("**Table III")
    assert [c.strip() for c in md[2].split("|")[1:-1]] == ["dataset", "representation", "attacks", "alexnet",
                                                           "resnet18"]
    assert [c.strip() for c in md[4].split("|")[1:-1]] == [DS, CWT, "all", "", "1.200*"]
    assert len({len(line) for line in md[2:]}) == 1  # aligned columns
    text = R.format_tables(data)
    assert "Table I:" in text and "Table II:" in text and "Table III:" in text and "ε_max: all 3" in text


def test_collect_unknown_experiment_is_one_line(store: str) -> None:
    with pytest.raises(ConfigError, match="no MLflow experiment named 'nope'"):
        D.collect("nope", store)


def test_collect_defaults_to_the_uri_mlflow_is_pointed_at(store: str) -> None:
    mlflow.set_tracking_uri(store)
    try:
        assert len(D.collect("demo").runs) == len(D.collect("demo", store).runs) > 0
    finally:
        mlflow.set_tracking_uri(None)


def _frame(rows: list[dict]) -> D.ReportData:
    return D.ReportData("x", pd.DataFrame(rows).reindex(columns=["run_id", *D.COORDS, "test_accuracy"]))


def test_defense_resolution_errors() -> None:
    rows = [dict(run_id=str(i), kind="train", dataset="d", frontend="f", victim="v", defense=d, attack="",
                 test_accuracy=0.5) for i, d in enumerate(("none", "fgsm_mix", "pgd_at"))]
    data = _frame(rows)
    with pytest.raises(ValueError, match="several defenses"):
        R.table_1(data)
    with pytest.raises(ValueError, match="defense 'fast' has no runs"):
        R.table_3(data, "fast")
    assert R.table_1(data, "pgd_at").iloc[0]["v"] == "50.00, (0.00)"


def test_table_1_shows_the_logged_wilson_interval_of_one_seed() -> None:
    data = D.ReportData("x", pd.DataFrame([dict(run_id="1", kind="train", dataset="d", frontend="f", victim="v",
                                                defense="none", test_accuracy=0.8, test_accuracy_ci_low=0.7112,
                                                test_accuracy_ci_high=0.8666)]))
    assert R.table_1(data).iloc[0]["v"] == "80.00 [71.12, 86.66]"


def test_only_original_models_and_empty_data(tmp_path: Path) -> None:
    data = _frame([dict(run_id="1", kind="train", dataset="d", frontend="f", victim="v", defense="none",
                        attack="", test_accuracy=0.25)])
    assert R.table_1(data).iloc[0]["v"] == "25.00"
    paths = R.write_tables(data, tmp_path)
    assert sorted(p.name for p in paths) == ["per_attack.csv", "table_1_none.csv", "table_1_none.md",
                                             "table_2_original.csv", "table_2_original.md"]
    empty = _frame([])
    assert R.table_1(empty).empty and R.table_2(empty, model="original").empty
    assert "Table I" in R.format_tables(empty)


def test_markdown_escapes_and_aligns() -> None:
    md = R.to_markdown(pd.DataFrame({"a": ["x|y", ""], "long name": [1.5, math.nan]}))
    assert md.splitlines() == ["| a    | long name |", "|------|-----------|", "| x\\|y | 1.5       |",
                               "|      |           |"]


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> D.ReportData:
    """Runs as the grid runner tags them: two seeds, an L2 and an L0 table attack, and a baseline."""
    root = tmp_path_factory.mktemp("tagged")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("seeds", artifact_location=(root / "artifacts").as_uri())
    clock = iter(range(10, 10_000))
    attacks = {"bim_a": ("l2", "true"), "jsma": ("l0", "true"), "noise": ("l2", "false")}
    eps_r = {("bim_a", "0"): 1.2, ("bim_a", "1"): 1.6, ("jsma", "0"): 0.5, ("jsma", "1"): 0.7,
             ("noise", "0"): 1.0, ("noise", "1"): 1.1}
    for seed in ("0", "1"):
        for defense in ("none", "fgsm_mix"):
            tags = dict(kind="train", dataset=DS, frontend=STFT, victim="alexnet", defense=defense, seed=seed)
            _run(client, exp, tags, {"test_accuracy": 0.8 if seed == "0" else 0.9}, start=next(clock))
            for attack, (norm, in_tables) in attacks.items():
                tags = dict(kind="attack", dataset=DS, frontend=STFT, victim="alexnet", defense=defense, seed=seed,
                            attack=attack, norm=norm, domain="representation", in_tables=in_tables)
                metrics = {"fooling_auc": 0.5, "eps_max": 3.0 if norm == "l2" else 100.0}
                if defense == "fgsm_mix":
                    metrics.update(eps_r=eps_r[attack, seed], eps_r_partial=0.0)
                _run(client, exp, tags, metrics, start=next(clock))
    return D.collect("seeds", uri)


def test_rows_per_norm_baselines_apart_and_means_across_seeds(tagged: D.ReportData) -> None:
    """Issue 7: L0 and L2 never share a row, baselines sit in rows of their own, and repeated training seeds
    give the mean with the Student-t interval across seeds."""
    assert list(tagged.table_rows()) == [(DS, STFT, "l0"), (DS, STFT, "l2"), (DS, STFT, "noise (l2)")]
    t3 = R.table_3(tagged, "fgsm_mix").set_index(D.ROWS)
    # mean 1.4, s = 0.2828, t(0.975, 1) = 12.706: 1.4 ± 2.541
    assert t3.at[(DS, STFT, "l2"), "alexnet"] == "1.400 [-1.141, 3.941] ≈ (n=2)"
    assert t3.at[(DS, STFT, "l0"), "alexnet"].startswith("0.600 [")
    per_seed = R.table_3(tagged, "fgsm_mix", seed="1").set_index(D.ROWS)
    assert per_seed.at[(DS, STFT, "l2"), "alexnet"] == "1.600"  # no per-clip record: no bootstrap interval
    t1 = R.table_1(tagged, "fgsm_mix").set_index(D.ROWS[:2])
    assert t1.at[(DS, STFT), "alexnet"].startswith("85.00 [") and t1.at[(DS, STFT), "alexnet"].endswith(
        "(n=2), (0.00)")
    assert T.verdict_counts(tagged, "fgsm_mix") == {"↑": 0, "↓": 0, "≈": 3, "?": 0}
    stems = [stem for stem, _, _ in R._sections(tagged, None)]
    assert "table_3_fgsm_mix_seed0" in stems and "table_3_fgsm_mix_seed1" in stems
    assert "ε_max: l0 100; l2 3; noise (l2) 3" in R.format_tables(tagged)


def test_a_report_computes_each_defenses_cells_once(tagged: D.ReportData, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables II, III and the defense comparison (each attack group of it) share one computation of a defense's
    per-seed cells, and writing then printing a report computes nothing twice; the shared cells come out
    unchanged (the same text as from a fresh read)."""
    def fresh() -> D.ReportData:
        return D.ReportData(tagged.experiment, tagged.all_runs.copy(), tagged.records, tagged.n_boot, tagged.level,
                            tagged.transfers)

    expected = R.format_tables(fresh())
    computed: list[tuple[int, str, str, object]] = []
    cells = T._cells

    def counted(data: D.ReportData, defense: str, metric: str, attacks: object) -> pd.DataFrame:
        computed.append((id(data), defense, metric, attacks))
        return cells(data, defense, metric, attacks)

    monkeypatch.setattr(T, "_cells", counted)
    data = fresh()
    R.write_tables(data, tmp_path)
    assert R.format_tables(data) == expected
    assert len(set(computed)) == len(computed) == 3  # fgsm_mix's AUC and ε_r, the original's AUC


@pytest.mark.timeout(180)
def test_report_draws_fig1_from_the_examples_attack_runs_keep(store: str, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16 item 5: each attack run keeps its base set's first clip (and its first broken one); `advaudio report`
    draws seed 004's Fig. 1 from them: a row per (representation, attack) with clean / adversarial / perturbation
    panels, the perturbation's norm in the attack's norm and domain, computed here from the stored arrays, on the
    panels. A run without an example (logged before they existed) is left out."""
    from attacks.base import create_attack
    from defense.cli import main
    from evaluation.examples import EXAMPLE_ARTIFACT, example_figures, log_example
    from evaluation.harness import evaluate_attack, to_record
    from evaluation.tracking import RECORD_ARTIFACT
    from tiny import tones, trained_victim

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    victim = trained_victim(steps=5)
    waves, labels = tones(3, seed=7)
    attacks = {"fgsm": (create_attack("fgsm", domain="representation", norm="l2"), 12.0),
               "deepfool": (create_attack("deepfool", domain="waveform", steps=30), 12.0),
               "noise": (create_attack("noise", domain="waveform"), 3.0)}  # breaks a few clips, not the first
    evs = {name: evaluate_attack(victim, attack, waves, labels, eps_max=eps, n_budgets=4, n_bisect=2, name=name, seed=0)
           for name, (attack, eps) in attacks.items()}
    uri, outputs = store, Path(store.removeprefix("sqlite:///")).parent  # the store of the tables' tests
    client = MlflowClient(uri)
    exp = client.create_experiment("figs", artifact_location=(outputs / "figs").as_uri())
    mlflow.set_tracking_uri(uri)
    coords = dict(dataset="tones", victim="tiny", defense="none")
    clock = iter(range(10, 1000))
    run_ids = {}
    for frontend in ("stft_b", "stft_a"):
        _run(client, exp, dict(kind="train", frontend=frontend, **coords), {"test_accuracy": 1.0}, start=next(clock))
        for name, ev in [*evs.items(), ("old", None)]:
            tags = dict(kind="attack", frontend=frontend, attack=name, domain="representation", norm="l2", **coords)
            run_ids[frontend, name] = run_id = _run(client, exp, tags, {"fooling_auc": 0.5}, start=next(clock))
            if ev is not None:
                with mlflow.start_run(run_id=run_id):
                    mlflow.log_dict(to_record(ev), RECORD_ARTIFACT)
                    log_example(ev, victim, waves[ev.base_index])
    assert main(["report", "figs", "--outputs", str(outputs)]) == 0
    assert "seed 004's Fig. 1 (one clip under every attack): fig1_tones_tiny_none.png" in capsys.readouterr().out
    assert (outputs / "reports" / "figs" / "fig1_tones_tiny_none.png").stat().st_size > 0

    ((stem, fig),) = example_figures(D.collect("figs", uri), uri)
    assert stem == "fig1_tones_tiny_none"
    panels = [ax for ax in fig.axes if ax.get_title()]
    rows = [(f, a) for f in ("stft_a", "stft_b") for a in ("fgsm", "deepfool", "noise")]  # "old" kept no example
    assert len(panels) == 3 * len(rows) and all(ax.get_images() for ax in panels)
    for r, (frontend, name) in enumerate(rows):
        ev, clean_ax, adv_ax, delta_ax = evs[name], *panels[3 * r:3 * r + 3]
        clip = int(clean_ax.get_title().split("clip ")[1].split()[0])
        with downloaded(run_ids[frontend, name], EXAMPLE_ARTIFACT, client) as path, np.load(path) as stored:
            assert int(stored["index"][0]) == int(ev.base_index[0])  # every run keeps its base set's first clip
            assert len(stored["index"]) == 1 + (not ev.success[0] and bool(ev.success.any()))  # and its first broken
            (j,) = np.flatnonzero(stored["index"] == clip)
            clean, adv = (stored["clean_rep"][j], stored["adv_rep"][j]) if name == "fgsm" else \
                (stored["clean_input"][j], stored["adv_input"][j])
            by_hand = float(np.linalg.norm(adv.astype(np.float64) - clean))
        (pos,) = (ev.base_index == clip).nonzero().flatten().tolist()
        assert by_hand == pytest.approx(float(ev.norms[pos]), rel=1e-4)  # what the attack measured
        domain = "representation" if name == "fgsm" else "waveform"
        text = f"‖δ‖₂ = {by_hand:.4g} ({domain})"
        assert clean_ax.get_title() == f"{frontend}: clean, clip {clip} ({victim.class_names[int(labels[clip])]})"
        assert adv_ax.get_title().endswith(text) and delta_ax.get_title() == f"{name}: perturbation\n{text}"
        assert ("→" in adv_ax.get_title()) == bool(ev.success[pos])


def _kept(index: int, broken: bool) -> Example:
    return Example(index, "a", "b" if broken else "a", broken, 1.0 if broken else math.inf, "representation", "l2",
                   np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32))


def test_fig1_shows_the_clip_broken_in_the_most_rows() -> None:
    """Each row keeps its base set's first clip and, where that one was not broken, its first broken clip; the figure
    shows the clip broken in the most rows (then kept in the most, then the first); a row without it shows its own
    first broken clip."""
    rows = [[_kept(0, False), _kept(2, True)], [_kept(0, False), _kept(2, True)], [_kept(0, True)]]
    assert choose_clip(rows) == 2
    assert [pick(row, 2).index for row in rows] == [2, 2, 0]
    assert choose_clip([[_kept(0, True)], [_kept(0, False), _kept(3, True)]]) == 0  # tie on broken: kept in both
    assert choose_clip([[_kept(4, False)], [_kept(1, False)]]) == 1
    assert choose_clip([[], []]) is None and pick([], None) is None
    assert pick([_kept(5, False), _kept(6, False)], 1).index == 5
