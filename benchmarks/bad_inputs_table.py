"""The bad-input catalogue of issue 17 as a markdown table (docs/benchmarks.md).

Runs every case of ``tests/test_bad_inputs.py`` (the same tiny inputs, the same checks)
and prints one row per case: the bad input, the command, and the exact one-line message.
Paths are shown relative to the folder of the tiny inputs. Run:

    python benchmarks/bad_inputs_table.py > /tmp/bad_inputs.md
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_catalogue():
    """tests/test_bad_inputs.py as a module (the table lives there, beside its test)."""
    spec = importlib.util.spec_from_file_location("bad_inputs_catalogue",
                                                  ROOT / "tests" / "test_bad_inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    """``text`` as a markdown code span (double backticks when it holds a backtick)."""
    return f"`` {cell(text)} ``" if "`" in text else f"`{cell(text)}`"


def main() -> int:
    cat = load_catalogue()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = cat.build_world(tmp / "inputs")
        names = {v: Path(v).name for v in world.values()}
        rows, failures = [], 0
        for i, case in enumerate(cat.CASES, 1):
            command = " ".join("deepsmlm " + a if j == 0 else a for j, a in enumerate(
                arg.format(**{k: names[v] for k, v in world.items()}) for arg in case.args))
            why = case.skip() if case.skip else None
            if why:
                rows.append(f"| {i} | {cell(case.name)} | {code(command)} | skipped: "
                            f"{cell(why)} |")
                continue
            work = tmp / f"case{i}"
            work.mkdir()
            with pytest.MonkeyPatch.context() as mp:
                cat.prepare(case, work, mp)
                status, err, _ = cat.run_case(case, world, work, mp)
            lines = err.strip("\n").splitlines()
            message = lines[0] if len(lines) == 1 else " ⏎ ".join(lines)
            message = message.replace(str(tmp / "inputs") + "/", "")
            ok = (status == 2 and len(lines) == 1 and case.needle in message)
            failures += not ok
            fails = "" if ok else f"**FAILS (exit {status})** "
            rows.append(f"| {i} | {cell(case.name)} | {code(command)} | {fails}"
                        f"{code(message)} |")
    print(f"{len(cat.CASES)} cases, {failures} failing "
          f"(`python benchmarks/bad_inputs_table.py`):\n")
    print("| # | bad input | command | message (stderr, exit status 2) |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
