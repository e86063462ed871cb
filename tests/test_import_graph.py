"""The package's import graph, read from the source (every import statement, in functions too, but not those under
``if TYPE_CHECKING:``): no module imports one that imports it back, and packages import only the layers below them
(README, Layout), the CLI being the one entry point above them all; and what a command imports as it starts."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"victims": 0, "attacks": 1, "training": 1, "evaluation": 2, "defense": 3, "leaderboard": 4, "experiments": 5}
ENTRY = "defense.cli"
"""The command line: it dispatches to every layer (the leaderboard commands, the studies through their registry)."""


def _modules() -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.timeout(60)
def test_no_module_imports_one_that_imports_it_back() -> None:
    assert _cycles(_graph()) == []


@pytest.mark.timeout(60)
def test_the_cycle_finder_finds_a_registration_cycle() -> None:
    """The shape the registries had: a model file imports the registry from the module that imports the model file."""
    assert _cycles({"a.models": {"a.extra"}, "a.extra": {"a.models"}, "a.user": {"a.models"}}) == [
        ["a.extra", "a.models"]]


@pytest.mark.timeout(60)
def test_packages_import_only_the_layers_below_them() -> None:
    upward = [(module, target) for module, targets in _graph().items() if module != ENTRY for target in targets
              if (LAYERS[target.split(".")[0]], target.split(".")[0]) != (LAYERS[module.split(".")[0]],
                                                                          module.split(".")[0])
              and LAYERS[target.split(".")[0]] >= LAYERS[module.split(".")[0]]]
    assert upward == []


ARTIFACT_READER = "evaluation.tracking"
"""The one module that calls MLflow's ``download_artifacts`` (:func:`evaluation.tracking.downloaded`)."""


@pytest.mark.timeout(60)
def test_artifacts_are_read_back_only_through_the_tracking_module() -> None:
    """MLflow's ``download_artifacts`` without a destination copies into a temporary folder nobody removes (the
    suite once left 70 GB in /tmp): the package, its tests and benchmarks read artifacts through ``downloaded``."""
    scripts = {f"{d}/{p.name}": p for d in ("tests", "benchmarks") for p in (REPO / d).glob("*.py")}
    callers = [f"{path.relative_to(REPO)}:{node.lineno}" for name, path in {**_modules(), **scripts}.items()
               if name != ARTIFACT_READER for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Attribute) and node.attr == "download_artifacts"]
    assert callers == []


LAZY = ("timm", "torchvision", "torch._dynamo")
"""Imported only when one of their models is built: 1.7 s of a command's start on a CPU (victims/backbones.py)."""
START = """
import sys
import defense.cli, defense.runner, defense.pipeline, defense.attack_cell, training.trainer, evaluation.harness
from victims.victim import build_victim
for backbones in (("resnet56", "averagepool_cnn"), ("resnet18",)):
    for backbone in backbones:
        build_victim({"name": "stft_db", "n_fft": 128, "hop": 64}, {"backbone": backbone}, ["a", "b"], 8000, 2000)
    print(" ".join(m for m in LAZY if m in sys.modules))
"""


@pytest.mark.timeout(120)
def test_a_command_imports_timm_and_torchvision_only_for_their_models() -> None:
    """A fresh interpreter imports the grid, training and attack code and builds the CIFAR ResNet-56 and a seed
    model without timm, torchvision or the ``torch._dynamo`` torchvision loads; a timm model brings them."""
    done = subprocess.run([sys.executable, "-c", f"LAZY = {LAZY!r}\n{START}"], capture_output=True, text=True,
                          timeout=110, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = done.stdout.splitlines()
    assert before == ""
    assert set(after.split()) == set(LAZY)
