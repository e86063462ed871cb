"""The test suite's own rules, read from its source with ``ast``: no test module imports another (what several
share lives in a helper module under tests/ or in conftest.py), every test has a timeout (pytest-timeout's global
``timeout`` in pyproject.toml), and every wait on a process a test starts has one too, so a hung child fails its
test instead of hanging the run."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

TESTS = Path(__file__).resolve().parent
TEST_MODULES = sorted(TESTS.glob("test_*.py"))
SOURCES = sorted(TESTS.glob("*.py"))
WAITS = {"communicate", "wait", "join"}
"""Methods that block on a child process (``Popen``) or a thread until it ends, whose first argument or ``timeout=``
bounds the wait."""
SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output"}


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "tests":  # `from tests import test_x`
                found += [(node.lineno, f"tests.{alias.name}") for alias in node.names]
    return found


def test_no_test_module_imports_another() -> None:
    """``from test_runner import TINY`` runs test_runner's module code in every importer and makes one test
    module's edit break another's collection; shared tiny grids, victims and fixtures live in helper modules."""
    names = {path.stem for path in TEST_MODULES}
    assert "test_suite_layout" in names  # the glob sees the test modules
    offences = []
    for path in TEST_MODULES:
        for line, module in _imported_modules(ast.parse(path.read_text(), str(path))):
            parts = module.split(".")
            target = parts[1] if parts[0] == "tests" and len(parts) > 1 else parts[0]
            if target in names:
                offences.append(f"{path.name}:{line} imports {module}")
    assert not offences, "\n".join(offences)


def test_every_test_has_a_timeout(pytestconfig: pytest.Config) -> None:
    """The global timeout applies to each test that sets no ``@pytest.mark.timeout`` of its own."""
    assert float(pytestconfig.getini("timeout")) > 0


def _unbounded_waits(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        bounded = bool(node.args) or any(k.arg == "timeout" for k in node.keywords)
        attr, owner = node.func.attr, node.func.value
        if attr in WAITS:
            if not bounded:
                lines.append(node.lineno)
        elif attr in SUBPROCESS_CALLS and isinstance(owner, ast.Name) and owner.id == "subprocess":
            if not any(k.arg == "timeout" for k in node.keywords):
                lines.append(node.lineno)
    return sorted(lines)


def test_every_wait_on_a_process_a_test_starts_has_a_timeout() -> None:
    offences = [f"{path.name}:{line}" for path in SOURCES for line in _unbounded_waits(ast.parse(path.read_text()))]
    assert not offences, "waits without a timeout: " + ", ".join(offences)


def test_the_checks_see_what_they_look_for() -> None:
    """Each check flags a known offence, so an empty list above means a clean suite, not a blind check."""
    tree = ast.parse("from test_runner import TINY\nimport tests.test_cli\nfrom tests import test_harness\n")
    assert [m for _, m in _imported_modules(tree)] == ["test_runner", "tests.test_cli", "tests", "tests.test_harness"]
    bad = ast.parse("p.wait()\nsubprocess.run(cmd, check=True)\nout, err = p.communicate()\nt.join()\n"
                    "p.wait(timeout=5)\nsubprocess.run(cmd, timeout=5)\nt.join(5)\nsubprocess.Popen(cmd)\n"
                    "runner.run(grid)\n")
    assert _unbounded_waits(bad) == [1, 2, 3, 4]
