"""The code-shape check of listcopy's source: small functions and classes, no C inside Python,
a docstring opening every module.

    python tools/check_shape.py                 # all of src/
    python tools/check_shape.py src/listcopy/report src/listcopy/engine.py

Rules, read from the syntax tree (``ast``) of every ``.py`` file under the given paths:

- a function (or method, nested ones included) spans at most 60 lines, a class at most 200;
  a span runs from the first decorator to the last line of the body;
- no string holds C source: an ``#include``, a C function definition (``void f(...) {``), a
  ``typedef`` or a ``struct NAME {`` (C belongs in a ``.c`` file; a generated header of
  ``#define`` constants is fine);
- every module opens with a docstring saying what it holds.

Each violation is printed as one line, ``path:line name N lines`` for a span (``name`` dotted
through its enclosing classes and functions), ``path:line name <what is wrong>`` for the rest.
Exit status: 0 when there are none, 1 when there are, 2 for a path that does not exist.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from pathlib import Path
from typing import Iterator

MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 200

C_SOURCE = re.compile(
    r"^\s*#\s*include\b"                                        # a preprocessor include
    r"|^\s*typedef\s"                                           # a type definition
    r"|^\s*(?:static\s+)?struct\s+\w+\s*\{"                     # a struct definition
    r"|^\s*(?:static\s+|inline\s+|extern\s+|const\s+)*"         # a function definition
    r"(?:void|int|float|double|char|long|short|unsigned|size_t|u?int(?:8|16|32|64)_t)"
    r"[\s*]+\w+\s*\([^)]*\)\s*\{",
    re.MULTILINE)


def span(node: ast.AST) -> tuple[int, int]:
    """(first line, number of lines) of a definition, its decorators included."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
    return first, node.end_lineno - first + 1


def definitions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """Every function and class in ``tree``, with its dotted name, outermost first."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = prefix + node.name
            yield name, node
            yield from definitions(node, name + ".")
        else:
            yield from definitions(node, prefix)


def check_source(text: str, path: str) -> list[str]:
    """The violations in one file's source ``text`` (``path`` only names it)."""
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as err:
        return [f"{path}:{err.lineno} <module> does not parse: {err.msg}"]
    out = []
    if not (ast.get_docstring(tree) or "").strip():
        out.append(f"{path}:1 <module> has no opening docstring")
    for name, node in definitions(tree):
        limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
        first, n = span(node)
        if n > limit:
            out.append(f"{path}:{first} {name} {n} lines")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found = C_SOURCE.search(node.value)
            if found:
                out.append(f"{path}:{node.lineno} <string> holds C source: "
                           f"{found.group(0).strip()[:60]!r}")
    return out


def python_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        else:
            yield path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="check_shape", description="Check function and class sizes, C in strings and "
                                        "module docstrings under PATHs (default: src/).")
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="files or directories (default: the repository's src/)")
    args = parser.parse_args(argv)
    paths = args.paths or [Path(os.path.relpath(Path(__file__).resolve().parent.parent / "src"))]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"check_shape: error: no such file or directory: {', '.join(missing)}",
              file=sys.stderr)
        return 2
    violations = [v for f in python_files(paths)
                  for v in check_source(f.read_text(encoding="utf-8"), str(f))]
    for v in violations:
        print(v)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
