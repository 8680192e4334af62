"""Core's layers, as docs/architecture.md draws them: a module imports only from its own
floor or the floors below (imports inside functions count too; type-only imports do not)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "mmplug"

#: Bottom to top. A floor is a subpackage or a top-level module of ``mmplug``.
FLOORS: list[set[str]] = [
    {"errors", "kinds", "version", "files"},
    {"plugins"},
    {"model"},
    {"data"},
    {"runs"},
    {"training"},
    {"cli", "testing", "scaffold", "__init__", "__main__"},
]


def floor_of(part: str) -> int:
    return next(index for index, names in enumerate(FLOORS) if part in names)


def imported(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every mmplug import that runs (not those under TYPE_CHECKING)."""
    found = []
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",):
            typing_only |= {id(child) for child in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "mmplug":  # from mmplug import errors: the submodules named
                names = [f"mmplug.{alias.name}" for alias in node.names]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("mmplug.")]


MODULES = sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_no_module_imports_from_a_floor_above_its_own(path: Path) -> None:
    own = floor_of(path.relative_to(CORE).parts[0].removesuffix(".py"))
    upward = [
        f"line {line}: {name}"
        for line, name in imported(ast.parse(path.read_text()))
        if name.split(".")[1] in set().union(*FLOORS) and floor_of(name.split(".")[1]) > own
    ]
    assert not upward, f"{path.relative_to(CORE)} imports from above its floor: {upward}"


def test_every_part_of_core_has_a_floor() -> None:
    parts = {path.relative_to(CORE).parts[0].removesuffix(".py") for path in MODULES}
    assert parts <= set().union(*FLOORS), parts - set().union(*FLOORS)


def test_the_check_sees_an_upward_import() -> None:
    tree = ast.parse("def f():\n    from mmplug.training.train import train\n")
    assert imported(tree) == [(2, "mmplug.training.train")]
    assert floor_of("training") > floor_of("runs")
