"""The whole house: no import cycles, floors that point one way, configuration at the edge,
and a light `import deepsmlm`. The import graph is computed from the code — module-level
and function-level imports alike."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "deepsmlm"

# Floors, lowest first. A module may import its own floor and the floors below, never one
# above (the first entry that is a prefix of a module's name decides its floor).
FLOORS = [
    ("foundation", ["deepsmlm._version", "deepsmlm.errors", "deepsmlm.schema",
                    "deepsmlm.emitters", "deepsmlm.io", "deepsmlm.camera", "deepsmlm.plotting",
                    "deepsmlm.neighbours"]),
    ("physics", ["deepsmlm.optics", "deepsmlm.simulation"]),
    ("components", ["deepsmlm.render", "deepsmlm.evaluation", "deepsmlm.models",
                    "deepsmlm.losses", "deepsmlm.postprocess", "deepsmlm.data",
                    "deepsmlm.calibration", "deepsmlm.refine", "deepsmlm.uncertainty"]),
    ("methods", ["deepsmlm.methods"]),
    ("config", ["deepsmlm.config"]),
    ("build", ["deepsmlm.build"]),
    ("engines", ["deepsmlm.training", "deepsmlm.inference", "deepsmlm.design",
                 "deepsmlm.parallel"]),
    ("edge", ["deepsmlm.steps", "deepsmlm.api", "deepsmlm.cli", "deepsmlm"]),
]
# The only readers of the experiment config: build.py and the steps.
CONFIG_READERS = ("deepsmlm.build", "deepsmlm.steps")


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(SRC).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module → the package modules it imports (``from a import b`` counts as a.b when b is
    a module, else as a)."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")
                    if path.name != "__init__.py":
                        parts = parts[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    deps.add(full if full in mods else base)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def floor_of(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(FLOORS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None
                                                                 or len(p) > best[1]):
                best = (i, len(p))
    assert best is not None, f"{module} has no floor: add it to FLOORS"
    return best[0]


def test_the_graph_sees_function_level_imports():
    g = import_graph()
    assert len(g) >= 60
    assert "deepsmlm.api" in g["deepsmlm"]  # imported inside __getattr__
    assert "deepsmlm.steps.simulate" in g["deepsmlm.cli"]  # imported inside cmd_simulate


def test_no_import_cycles_anywhere():
    g = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_lower_floors_never_import_upper_ones():
    bad = [f"{m} ({FLOORS[floor_of(m)][0]}) imports {d} ({FLOORS[floor_of(d)][0]})"
           for m, deps in import_graph().items() for d in deps if floor_of(d) > floor_of(m)]
    assert not bad, "\n".join(bad)


def test_only_build_and_the_steps_read_the_experiment_config():
    readers = sorted(m for m, deps in import_graph().items() if "deepsmlm.config" in deps)
    assert readers, "nobody imports the config?"
    stray = [m for m in readers
             if not any(m == r or m.startswith(r + ".") for r in CONFIG_READERS)]
    assert not stray, f"modules that import deepsmlm.config besides build and steps: {stray}"


def test_nothing_outside_methods_names_a_method():
    """No module outside methods/ branches on the method's name (the registry does)."""
    import re

    names = "|".join(sorted(__import__("deepsmlm.methods").methods.names(), key=len)[::-1])
    pattern = re.compile(rf"""(==|!=|\bin\b)\s*[(\[{{]?\s*["']({names})["']""")
    hits = []
    for name, path in modules().items():
        if name.startswith("deepsmlm.methods"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_import_is_light():
    """`import deepsmlm`, and reading an experiment file (which knows every method's
    training section), load neither torch nor matplotlib nor scipy."""
    for module in ("deepsmlm", "deepsmlm.config"):
        code = f"import sys, {module}; print(sorted(m for m in ('torch', 'matplotlib', " \
               "'scipy') if m in sys.modules))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        assert out.stdout.strip() == "[]", module
