"""The package's layout rules: no import circles (module or subpackage), small modules, RecBole's internals
reached only from the places compat.py lists, and run provenance that counts only the code that computes."""
import ast
import os
import subprocess

import pytest

from mmrecbole import PROJECT_ROOT, compat, provenance

PACKAGE = os.path.join(PROJECT_ROOT, "mmrecbole")
#: RecBole modules whose use is the public model API every model builds on (no entry in compat needed).
PUBLIC_RECBOLE = {"recbole.model.abstract_recommender", "recbole.model.layers", "recbole.utils"}


def _modules():
    """{dotted module name: path} of every module of the package."""
    found = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, PROJECT_ROOT)[:-3].replace(os.sep, ".")
                found[dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return found


def _imports(path):
    """Every `import` of the file, at module level or inside functions: [(module, [names])]."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def import_graph(modules):
    """{module: {modules of the package it imports}} (lazy imports inside functions count: they only hide a
    circle)."""
    def owner(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for module, path in modules.items():
        targets = set()
        for imported, names in _imports(path):
            if not imported.startswith("mmrecbole"):
                continue
            for name in names or [""]:
                full = f"{imported}.{name}" if name else imported
                targets.add(owner(full) if full in modules else owner(imported))
        targets.discard(module)
        targets.discard("")
        graph[module] = targets
    return graph


def cycles(graph):
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def subpackage_graph(graph):
    def top(module):
        return ".".join(module.split(".")[:2])

    collapsed = {}
    for module, targets in graph.items():
        collapsed.setdefault(top(module), set()).update(top(t) for t in targets if top(t) != top(module))
    return collapsed


def test_the_cycle_finder_finds_a_planted_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles(subpackage_graph({"m.x.one": {"m.y.two"}, "m.y.two": {"m.z"}, "m.z": {"m.x.three"},
                                    "m.x.three": set()})) == [["m.x", "m.y", "m.z"]]


def test_no_import_circles_between_modules_or_subpackages():
    graph = import_graph(_modules())
    assert cycles(graph) == []
    packages = subpackage_graph(graph)
    assert cycles(packages) == []
    assert "mmrecbole.ensemble" not in packages["mmrecbole.leaderboard"]  # the stacker is a model row like any
    assert "mmrecbole.leaderboard" not in packages["mmrecbole.ensemble"]  # other; both build on mmrecbole.runs


def test_no_module_over_400_lines():
    long = {module: n for module, path in _modules().items()
            if (n := sum(1 for _ in open(path, encoding="utf-8"))) > 400}
    assert long == {}


def test_recbole_beyond_its_public_model_api_only_where_compat_says():
    reaching = set()
    for module, path in _modules().items():
        relative = os.path.relpath(path, PROJECT_ROOT).replace(os.sep, "/")
        used = {imported for imported, _ in _imports(path) if imported.split(".")[0] == "recbole"}
        if relative != "mmrecbole/compat.py" and used - PUBLIC_RECBOLE:
            reaching.add(relative)
    listed = set(compat.RECBOLE_TOUCHPOINTS)
    assert reaching - listed == set(), "add these modules to compat.RECBOLE_TOUCHPOINTS with what they rely on"
    assert all(os.path.isfile(os.path.join(PROJECT_ROOT, p)) for p in listed)


def _git(folder, *args):
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.mark.parametrize("edit, dirty", [("README.md", False), ("leaderboards/board/leaderboard.md", False),
                                         ("pkg/module.py", True), ("properties/overall.yaml", True),
                                         ("pkg/new_module.py", True),
                                         ("properties/leaderboard/new-board.yaml", False),
                                         ("properties/leaderboard/board.yaml", False)])
def test_a_run_is_uncommitted_only_when_the_code_it_hashes_changed(tmp_path, monkeypatch, edit, dirty):
    for relative in ("README.md", "leaderboards/board/leaderboard.md", "pkg/module.py", "properties/overall.yaml",
                     "properties/leaderboard/board.yaml"):
        os.makedirs(os.path.dirname(tmp_path / relative) or tmp_path, exist_ok=True)
        (tmp_path / relative).write_text("v1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "one")
    monkeypatch.setattr(provenance, "PROJECT_ROOT", str(tmp_path))
    monkeypatch.setattr(provenance, "PACKAGE_DIR", str(tmp_path / "pkg"))
    monkeypatch.setattr(provenance, "PROPERTIES_DIR", str(tmp_path / "properties"))
    assert not provenance.code_commit().endswith(provenance.UNCOMMITTED)
    (tmp_path / edit).write_text("v2\n")
    assert provenance.code_commit().endswith(provenance.UNCOMMITTED) is dirty
