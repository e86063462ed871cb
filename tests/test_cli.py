"""The advaudio command line: --help everywhere, one-line errors, train → checkpoint → attack one file."""
from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf

from defense.cli import build_parser, main
from tiny_configs import TINY_TRAIN


@pytest.mark.parametrize("command", ["prepare", "train", "attack", "experiment", "report", "ui"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage: advaudio " + command in capsys.readouterr().out
    assert command in build_parser().format_help()


@pytest.mark.parametrize("args, message", [
    (["train", "train.epoch=3"], "unknown key 'train.epoch'"),
    (["train", "victim=resnet19"], "unknown victim option 'resnet19' (did you mean 'resnet18'?)"),
    (["train", "train.optimizer=rmsprop"], "bad value for 'train.optimizer'"),
    (["experiment", "demo", "evaluation.n_example=3"], "unknown key 'evaluation.n_example'"),
    (["train", "-e", "demo"], "experiment 'demo' is a grid of 2 models: run it with `advaudio experiment demo`"),
    (["experiment", "train"], "experiment 'train' has no attacks (grid.attack): train its model with"),
    (["train", "--tracking-uri", "http://127.0.0.1:9", "train.epochs=1"] + TINY_TRAIN,
     "MLflow server at http://127.0.0.1:9 is not reachable"),
])
def test_bad_input_is_one_line_error(args: list[str], message: str, env: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args[:1], "--outputs", str(env / "out"), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_train_then_attack_one_file(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = env / "out"
    assert main(["train", "--outputs", str(out), *TINY_TRAIN]) == 0
    printed = capsys.readouterr().out
    checkpoint = Path(printed.split("checkpoint: ")[1].split()[0])
    run_id = printed.split("MLflow run: ")[1].split()[0]
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    run = mlflow.get_run(run_id)
    assert {"test_accuracy", "train_loss", "val_accuracy"} <= set(run.data.metrics)
    assert run.data.params["train.epochs"] == "8"
    assert {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "model")} == {
        "model/normalizer.json", f"model/{checkpoint.name}"}

    from training.data import load_splits
    from defense.config import compose, parse_overrides

    test = load_splits(compose("train", parse_overrides(TINY_TRAIN))["dataset"]).test
    source = env / "clip.wav"
    sf.write(source, test.waves[0, 0].numpy(), 8000)
    adv = env / "adv.wav"
    code = main(["attack", "--checkpoint", str(checkpoint), "--input", str(source), "--output", str(adv),
                 "--attack", "deepfool_l2", "domain=waveform"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "before:" in printed and "after:" in printed and "SNR:" in printed
    wave, rate = sf.read(adv)
    assert rate == 8000 and wave.shape == (test.num_samples,) and np.abs(wave).max() <= 1.0


def test_overrides_are_accepted_after_options(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 8: `advaudio experiment demo --outputs DIR train.seed=1` reaches the config, not argparse."""
    assert main(["experiment", "demo", "--outputs", str(env / "out"), "evaluation.n_exampl=3"]) == 2
    assert "unknown key 'evaluation.n_exampl'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "demo", "train.seed=1"])  # report takes no overrides: argparse's usage error


def _checkpoint(tmp: Path, frontend: dict, backbone: dict) -> Path:
    from training.checkpoints import save_atomic, victim_state
    from victims.victim import build_victim

    victim = build_victim(frontend, backbone, ["a", "b"], 22050, 4410)
    return save_atomic(victim_state(victim), tmp / "victim.pt")


def test_attack_checks_that_its_result_can_be_audio_before_attacking(env: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 8: a representation attack on a front-end without an inverse fails before the attack runs."""
    from attacks.base import Attack

    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the attack ran before the audio check")

    monkeypatch.setattr(Attack, "__call__", never)
    ckpt = _checkpoint(env, {"name": "waveform"}, {"backbone": "abdoli_cnn1d"})
    source = env / "clip.wav"
    sf.write(source, np.zeros(4410, dtype=np.float32), 22050)
    code = main(["attack", "--checkpoint", str(ckpt), "--input", str(source), "--output", str(env / "adv.wav"),
                 "--attack", "fgsm", "domain=representation"])
    err = capsys.readouterr().err
    assert code == 2 and "no waveform inverse for the Waveform representation" in err and err.count("\n") == 1
    assert not (env / "adv.wav").exists()


def test_user_errors_are_one_line_and_other_errors_show_their_traceback(
        env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import defense.cli as cli
    from training.data.errors import AudioError
    from victims.registry import ConfigError

    def fails(error: Exception):  # type: ignore[no-untyped-def]
        def handler(_args: object) -> int:
            raise error
        return handler

    monkeypatch.setattr(cli, "cmd_prepare", fails(AudioError("clip.wav is empty")))
    assert main(["prepare"]) == 2 and capsys.readouterr().err == "advaudio prepare: error: clip.wav is empty\n"
    with pytest.raises(AudioError):  # -v: the traceback of a user error too
        main(["-v", "prepare"])
    monkeypatch.setattr(cli, "cmd_prepare", fails(ValueError("internal shape mismatch")))
    with pytest.raises(ValueError, match="internal shape mismatch"):  # not a user error: never hidden
        main(["prepare"])
    from attacks import ATTACKS

    with pytest.raises(ConfigError, match="attack 'noise': WhiteNoise cannot be targeted"):
        ATTACKS.create("noise", targeted=True)  # a constructor's ValueError is a config error


@pytest.mark.timeout(120)
def test_a_one_line_error_before_any_work_loads_neither_torch_nor_mlflow() -> None:
    """The error classes are read from the modules already loaded (``defense.cli.user_errors``): a bad port is told
    at once instead of after importing torch, MLflow and scikit-learn to classify it."""
    script = ("import sys; from defense.cli import main; code = main(['ui', '--port', '0']); "
              "print(code, sorted(m for m in ('torch', 'mlflow', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    assert done.stdout.split("\n")[0] == "2 []", done.stdout + done.stderr
    assert done.stderr == "advaudio ui: error: --port 0 is not a TCP port (1-65535)\n"


@pytest.mark.timeout(120)
def test_a_command_in_its_own_process_freezes_its_imports_and_one_in_a_callers_process_does_not(
        tmp_path: Path) -> None:
    """``python -m defense.cli`` and the console script (``main()``, the process's command line) import a command's
    modules with the garbage collector off and freeze what they left alive (``defense.cli._import_frozen``); a command
    run in an existing process (``main(argv)``: a test, a notebook) freezes nothing of its caller's."""
    args = ["report", "nothing", "--outputs", str(tmp_path / "missing")]  # a one-line error after the imports
    script = ("import gc, sys; from defense.cli import main; before = gc.get_freeze_count(); "
              f"first = main({args!r}); called = gc.get_freeze_count() - before; sys.argv = ['advaudio', *{args!r}]; "
              "second = main(); print(first, called, second, gc.get_freeze_count() - before > 100_000, "
              "gc.isenabled(), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    assert done.stdout.split("\n")[0] == "2 0 2 True True True", done.stdout + done.stderr


def test_a_command_module_that_fails_to_import_leaves_the_collector_on() -> None:
    from defense.cli import _import_frozen

    frozen = gc.get_freeze_count()
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        _import_frozen(["no_such_module"])
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_one_schema_a_single_model_experiment_is_a_one_cell_grid() -> None:
    """Issue 8: train.yaml and one model of a grid load through the same loader and compose alike."""
    from defense.config import compose, parse_overrides
    from defense.grid import load_grid

    overrides = parse_overrides(["train.epochs=2", "train.seed=3", "frontend=stft_db_small"])
    assert load_grid("train", overrides).single_cell() == compose("train", overrides)
    demo = load_grid("demo", parse_overrides(["grid.frontend=[stft_db_128]", "grid.victim=[resnet18]",
                                              "grid.defense=[none]"]))
    assert demo.single_cell() == load_grid("demo").cell_config("gm_instruments", "stft_db_128", "resnet18", "none", 0)


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def report_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An outputs folder whose store holds: 'other' (a training run), 'empty' (no runs), 'gridless' (only a grid's
    parent run) and one experiment per study tagged as that study (and one tagged with a study's earlier name, as an
    older store holds), with a training run but no study run."""
    from mlflow.tracking import MlflowClient

    from defense.studies import STUDIES, STUDY_TAG

    outputs = tmp_path_factory.mktemp("report") / "out"
    outputs.mkdir()
    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    location = (outputs / "mlartifacts").as_uri()
    for name, kind, study in [("other", "train", None), ("empty", None, None), ("gridless", "grid", None),
                              *[(f"{s}_empty", "train", s) for s in [*STUDIES.names(), "seed000"]]]:
        exp = client.create_experiment(name, artifact_location=location, tags={STUDY_TAG: study} if study else None)
        if kind is not None:
            client.set_terminated(client.create_run(exp, tags={"advaudio.kind": kind}).info.run_id)
    return outputs


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name, store, message", [
    ("made_up", "missing", "no MLflow store at {db}: nothing to report for 'made_up'"),
    ("made_up", "uri", "no MLflow store at {db}: nothing to report for 'made_up'"),
    ("made_up", "store", "no experiment 'made_up' in the MLflow store sqlite:///{db}: nothing to report (it holds "),
    ("empty", "store", "experiment 'empty' in the MLflow store sqlite:///{db} has no runs: nothing to report"),
    ("gridless", "store", "experiment 'gridless' in the MLflow store sqlite:///{db} has no train or defend or "
                          "attack runs"),
    ("other", "store", "experiment 'other' in the MLflow store sqlite:///{db} holds no grid model or attack run (no "
                       "data set and front-end tags): nothing to report"),  # `advaudio train` runs alone
    ("prinz_flexer_empty", "store", "experiment 'prinz_flexer_empty' in the MLflow store sqlite:///{db} has no study "
                                    "runs"),
    ("subramanian_empty", "store", "experiment 'subramanian_empty' in the MLflow store sqlite:///{db} has no study "
                                   "runs"),
    ("koerich_empty", "store", "experiment 'koerich_empty' in the MLflow store sqlite:///{db} has no study runs"),
    ("seed000_empty", "store", "experiment 'seed000_empty' in the MLflow store sqlite:///{db} has no study runs"),
])
def test_report_on_nothing_is_one_line_and_creates_nothing(
        name: str, store: str, message: str, report_store: Path, env: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17 item 7: a made-up experiment, a missing store, an experiment without runs (or without the runs its
    report reads: a grid's models, a study's run) exit non-zero with one line naming the experiment and store;
    no outputs folder, store, experiment or report folder is created."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(env)  # MLflow's default ./mlruns would land here
    outputs = report_store if store == "store" else env / "missing"
    db = (outputs / "mlflow.db").resolve()
    args = ["report", name, "--outputs", str(outputs)]
    if store == "uri":
        args += ["--tracking-uri", f"sqlite:///{db}"]
    client = MlflowClient(f"sqlite:///{report_store / 'mlflow.db'}")
    experiments = sorted(e.name for e in client.search_experiments())
    before, cwd = _files(report_store), _files(env)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"advaudio report: error: {message.format(db=db)}") and err.count("\n") == 1, err
    assert not (env / "missing").exists() and _files(env) == cwd
    assert _files(report_store) == before and sorted(e.name for e in client.search_experiments()) == experiments


@pytest.mark.timeout(120)
def test_attack_with_target_writes_a_clip_of_that_class(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`advaudio attack --target NAME` runs the attack targeted: the written clip, read back and classified by the
    checkpoint's model loaded again, is the named class (not just any class other than the clean prediction)."""
    import torch

    from training.checkpoints import load_victim, save_atomic, victim_state
    from victims.victim import build_victim

    torch.manual_seed(3)  # an untrained model on which PGD reaches the least likely class within the budget
    names = ["a", "b", "c"]
    frontend = {"name": "stft_db", "n_fft": 256, "hop": 128}
    ckpt = save_atomic(victim_state(build_victim(frontend, {"backbone": "koerich_cnn2d", "dense": 8}, names, 8000,
                                                 2000)), env / "victim.pt")
    victim = load_victim(ckpt)
    source, adv = env / "clip.wav", env / "adv.wav"
    sf.write(source, (0.3 * torch.randn(2000)).clamp(-1, 1).numpy(), 8000, subtype="FLOAT")

    def probabilities(path: Path) -> torch.Tensor:
        wave = torch.from_numpy(sf.read(path, dtype="float32")[0]).view(1, 1, -1)
        with torch.no_grad():
            return victim(wave).softmax(-1)[0]

    clean = probabilities(source)
    before, target = int(clean.argmax()), names[int(clean.argmin())]  # the least likely class, not the nearest
    code = main(["attack", "--checkpoint", str(ckpt), "--input", str(source), "--output", str(adv), "--no-progress",
                 "--attack", "pgd_l2", "domain=waveform", "eps=10.0", "steps=60", "rel_stepsize=0.05",
                 "--target", target])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"before: {names[before]} " in printed and f"after:  {target} " in printed and "-> success" in printed
    assert int(probabilities(adv).argmax()) == names.index(target)
    # the class it already has is no target: a one-line error, not an unchanged clip reported as a success
    code = main(["attack", "--checkpoint", str(ckpt), "--input", str(source), "--output", str(env / "same.wav"),
                 "--no-progress", "--attack", "pgd_l2", "domain=waveform", "--target", names[before]])
    err = capsys.readouterr().err
    assert code == 2 and f"already classifies clip.wav as '{names[before]}'" in err and err.count("\n") == 1, err
    assert not (env / "same.wav").exists()
