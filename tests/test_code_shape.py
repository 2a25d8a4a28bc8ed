"""The code-shape check (tools/check_shape.py): src/ passes it, and it catches what it is for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "check_shape.py"


def check(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)], capture_output=True,
                          text=True, cwd=ROOT)


def test_src_has_small_functions_and_classes_no_c_and_module_docstrings():
    done = check(ROOT / "src")
    assert done.stdout == "" and done.returncode == 0, done.stdout


def function(name: str, n_lines: int, indent: str = "", decorators: int = 0) -> list[str]:
    """A function spanning exactly ``n_lines`` lines, decorators included."""
    body = [f"{indent}    x = {i}" for i in range(n_lines - 2 - decorators)]
    return ([f"{indent}@staticmethod"] * decorators + [f"{indent}def {name}():"] + body
            + [f"{indent}    return x"])


def test_the_checker_finds_each_kind_of_violation(tmp_path):
    ok = ['"""A module."""', *function("fits", 60), *function("too_long", 61)]
    (tmp_path / "a.py").write_text("\n".join(ok) + "\n")
    # a class of 201 lines whose method, decorator included, is 61
    cls = ['"""A module."""', "class Big:", '    """Too big."""',
           *function("method", 61, "    ", decorators=1), *(f"    x{i} = {i}" for i in range(138))]
    (tmp_path / "b.py").write_text("\n".join(cls) + "\n")
    (tmp_path / "c.py").write_text('x = 1\n')
    c_text = ['"""A module."""', "HEADER = '#define N 3\\n'  # constants are fine",
              "SRC = '''", "static void forward(const float *x, int n) {", "}", "'''",
              "OTHER = '#include <stdio.h>'"]
    (tmp_path / "d.py").write_text("\n".join(c_text) + "\n")
    done = check(tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{tmp_path}/a.py:62 too_long 61 lines",
        f"{tmp_path}/b.py:2 Big 201 lines",
        f"{tmp_path}/b.py:4 Big.method 61 lines",
        f"{tmp_path}/c.py:1 <module> has no opening docstring",
        f"{tmp_path}/d.py:3 <string> holds C source: 'static void forward(const float *x, int n) {{'",
        f"{tmp_path}/d.py:7 <string> holds C source: '#include'",
    ]


def test_a_clean_file_passes_and_a_missing_path_is_one_line(tmp_path):
    (tmp_path / "ok.py").write_text('"""A module."""\n\n\ndef f():\n    return 1\n')
    done = check(tmp_path / "ok.py")
    assert (done.returncode, done.stdout) == (0, "")
    done = check(tmp_path / "missing")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "missing" in done.stderr
