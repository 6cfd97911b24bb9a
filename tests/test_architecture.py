"""The house rules that can be read off the import graph: no cycles, and dependencies point one way
(models <- editing <- tasks/pipeline <- CLI/server/plugins).  Every import counts, including the ones
inside functions; imports under ``if TYPE_CHECKING:`` do not (they never run), except in the check
that even they close no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = (("varedit", "varedit"), ("export", "varedit_onnx"), ("plugins", "varedit_plugins"))


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for folder, pkg in PACKAGES:
        for f in (REPO / folder).rglob("*.py"):
            if "node_modules" in f.parts or "examples" in f.parts:
                continue
            rel = f.relative_to(REPO / folder).with_suffix("")
            mods[".".join([pkg] + [p for p in rel.parts if p != "__init__"])] = (f, f.name == "__init__.py")
    return mods


def import_graph(type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports.  ``type_checking``: also the imports under ``if TYPE_CHECKING:``
    (they never run, but a cycle among them is still two modules that each need the other)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (f, is_pkg) in mods.items():
        tree = ast.parse(f.read_text())
        skip = set() if type_checking else {
            id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
        pkg = m.split(".") if is_pkg else m.split(".")[:-1]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                if node.module == "__future__":
                    continue
                target = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                targets = subs or [target]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:  # `import a.b.c` of a module we do not list: its package
                    t = t.rpartition(".")[0]
                if t and t != m:
                    graph[m].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_no_import_cycles_even_through_type_only_imports():
    """A lazy import one way and a TYPE_CHECKING import the other is still a cycle of design (the ONNX
    backend and runtime were one): the graph with the type-only imports has none either."""
    assert _cycles(import_graph(type_checking=True)) == []


def test_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LEAVES = ("varedit.options", "varedit.validation", "varedit.io", "varedit.cpu")  # small leaves anyone may use
LAYERS = {  # a module of a layer may import only from the layers listed (and the leaves)
    "varedit.models": ("varedit.models",),
    "varedit.processing": ("varedit.processing",),
    "varedit.editing": ("varedit.editing", "varedit.models", "varedit.processing"),
}
ABOVE_TASKS = ("varedit.cli", "varedit.commands", "varedit.server", "varedit_plugins")


def test_dependencies_point_one_way():
    graph = import_graph()
    bad = []
    for m, deps in graph.items():
        for prefix, allowed in LAYERS.items():
            if m == prefix or m.startswith(prefix + "."):
                bad += [(m, d) for d in deps if d.startswith("varedit") and not d.startswith(allowed + LEAVES)]
        if m.startswith(("varedit.tasks", "varedit.pipeline", "varedit_onnx")):
            bad += [(m, d) for d in deps if d.startswith(ABOVE_TASKS)]
    assert bad == []


def test_front_ends_load_models_through_one_path():
    """The command line, the server and the ComfyUI nodes choose torch or ONNX in one place
    (varedit.loading.load_editor): none of them opens an export or builds a pipeline itself, except the
    torch-only tools' ``ModelSpec.pipeline`` (training, evaluation)."""
    fronts = [*(REPO / "varedit" / "commands").glob("*.py"), *(REPO / "varedit" / "server").glob("*.py"),
              *(REPO / "plugins").rglob("*.py")]
    bad = []
    for f in fronts:
        text = f.read_text()
        if "OnnxVAR.from_dir" in text or "OnnxVAR(" in text:
            bad.append(f.name)
        if ".from_pretrained(" in text and f.name != "common.py" and "bench" not in f.name:
            bad.append(f.name)
    assert bad == []
