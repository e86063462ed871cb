"""The study registry (defense/studies.py): studies register themselves under their papers' names, keep their
earlier names as aliases, and nothing below the studies imports them."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from defense.config import CONFIG_ROOT, load_option
from defense.studies import STUDIES, Study, StudyRegistry
from victims.registry import ConfigError

ROOT = Path(__file__).resolve().parents[1]
LOWER = ("victims", "attacks", "training", "evaluation", "defense")
"""Packages below the studies: none may import ``experiments``."""


def _imports(path: Path) -> set[str]:
    """Modules a file imports (absolute names), wherever the import statement sits."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.timeout(60)
def test_the_studies_are_registered_under_their_papers_with_their_earlier_names() -> None:
    assert STUDIES.names() == ["koerich", "leaderboard", "prinz_flexer", "subramanian"]
    for old, new in (("seed000", "prinz_flexer"), ("seed001", "subramanian"), ("seed003", "koerich")):
        assert STUDIES.get(old) is STUDIES.get(new)
        assert STUDIES.experiment_option(old) == new and STUDIES.experiment_option(f"{old}_full") == f"{new}_full"
    assert STUDIES.experiment_option("demo") == "demo"
    with pytest.raises(ConfigError, match=r"unknown study 'seed002'; known: koerich, leaderboard, prinz_flexer, subramanian"):
        STUDIES.get("seed002")


@pytest.mark.timeout(60)
def test_every_study_config_names_its_study_and_an_old_name_resolves_alike() -> None:
    """Each study's experiment files (current names) say ``study: <its name>``; the same file with the earlier
    ``study:`` value resolves to the same study, so a run keyed by it resumes alike."""
    for name in STUDIES.names():
        study = STUDIES.get(name)
        for current in study.experiments.values():
            raw = load_option("experiment", current)
            assert raw["study"] == name and (CONFIG_ROOT / "experiment" / f"{current}.yaml").is_file()
            resolved = study.dry(raw, {}).study
            old = study.dry({**raw, "study": study.aliases[0]}, {}).study
            assert resolved.source == old.source and resolved.name == old.name


@pytest.mark.timeout(60)
def test_a_name_or_alias_cannot_be_registered_twice() -> None:
    registry = StudyRegistry()
    first = STUDIES.get("koerich")
    registry.register(first)
    with pytest.raises(ValueError, match="study 'seed003' is registered twice"):
        registry.register(Study("other", "", first.run, first.report, first.dry, first.plan, aliases=("seed003",)))


@pytest.mark.timeout(60)
def test_imports_point_one_way_and_the_studies_have_no_circle() -> None:
    """No module of the lower packages imports ``experiments``; the studies' modules import no module that imports
    them back (the import graph of ``experiments/`` has no cycle)."""
    upward = [(_module(p), m) for pkg in LOWER for p in (ROOT / pkg).rglob("*.py")
              for m in _imports(p) if m == "experiments" or m.startswith("experiments.")]
    assert upward == []
    files = {_module(p): p for p in (ROOT / "experiments").rglob("*.py")}
    graph = {mod: {m for m in _imports(p) if m in files and m != mod} for mod, p in files.items()}
    packages = {mod for mod, p in files.items() if p.name == "__init__.py"}
    state: dict[str, int] = {}

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for nxt in graph[mod] - packages:  # a package's __init__ registers its modules: importing it is the entry
            assert state.get(nxt) != 1, f"import circle: {' -> '.join([*path, mod, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, mod])
        state[mod] = 2

    for mod in graph:
        if mod not in state:
            visit(mod, [])
