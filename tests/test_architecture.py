"""Dependencies point one way, and `import deepsmlm` stays light."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "deepsmlm"
LOW_LEVEL = ["optics", "simulation", "camera.py", "emitters.py"]
HIGH_LEVEL = ("deepsmlm.models", "deepsmlm.training", "deepsmlm.cli", "deepsmlm.workflows",
              "deepsmlm.build", "deepsmlm.api", "deepsmlm.design")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_physics_never_imports_higher_layers():
    files = []
    for part in LOW_LEVEL:
        p = SRC / part
        files += list(p.rglob("*.py")) if p.is_dir() else [p]
    assert len(files) >= 8
    for f in files:
        bad = [m for m in imported_modules(f) if m.startswith(HIGH_LEVEL)]
        assert not bad, f"{f.relative_to(SRC)} imports {bad}"


def test_import_is_light():
    code = "import sys, deepsmlm; print(sorted(m for m in ('torch', 'matplotlib', 'scipy') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
