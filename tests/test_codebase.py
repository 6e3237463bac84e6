"""The codebase's own rules: only public library APIs, and no import cycles in `service/`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[1] / "service"
GUNICORN_CONF = SERVICE.parent / "config" / "gunicorn.conf.py"

# Private internals of Flask, Werkzeug, gunicorn, urllib3, prometheus-client and the standard library that earlier
# versions leaned on. Each can change in any release of its library.
PRIVATE_USES = {
    r"\._list\b": "werkzeug Headers internals",
    r"_get_current_object": "werkzeug LocalProxy internals",
    r"\bensure_sync\b": "overriding Flask.ensure_sync",
    r"get_wsgi_headers\(self": "overriding Response.get_wsgi_headers",
    r"logging\._srcfile": "logging internals",
    r"values\.ValueClass|values\.MutexValue": "prometheus-client internals",
    r"set_wakeup_fd": "signal wake-up fd juggling",
    r"worker\.(alive|wsgi|sockets)\b|ThreadWorker": "gunicorn worker internals",
    r"self\.(error_log|access_log)\b": "gunicorn Logger attributes (use the documented logger names)",
    r"\b_pool\b|_stacktrace": "urllib3 Retry.increment's private parameters",
}


def python_files() -> list[Path]:
    return [*sorted(SERVICE.rglob("*.py")), GUNICORN_CONF]


@pytest.mark.parametrize("pattern", PRIVATE_USES, ids=list(PRIVATE_USES.values()))
def test_no_private_library_internals(pattern):
    found = [
        f"{path.relative_to(SERVICE.parent)}:{number}"
        for path in python_files()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(pattern, line)
    ]
    assert found == [], f"{PRIVATE_USES[pattern]}: {found}"


def module_name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The service modules `path` imports at module level (imports inside functions are deliberate late imports)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known  # `from . import module`
            found.update(submodules or ({target} & known))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
    return found - {name}


def test_no_import_cycles_between_service_modules():
    paths = sorted(SERVICE.rglob("*.py"))
    known = {module_name(path) for path in paths}
    graph = {module_name(path): imported_modules(path, known) for path in paths}
    cycles = []
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_every_service_module_says_what_it_owns():
    missing = [
        str(path.relative_to(SERVICE.parent))
        for path in python_files()
        if not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert missing == []
