"""Packages are layered: every import inside `onereason` points to the same package or one below it.

`python tests/test_import_layers.py` prints the package import graph (what the README draws).
"""

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "onereason"
# Lowest first. A package may import from itself and from any package before it.
LAYERS = ("config", "rundir", "chat", "metrics", "protocol", "data", "itemic", "corpus", "model", "decoding",
          "reasoning", "train", "rl", "bench", "serve", "pipeline", "cli")


def imports() -> dict[str, dict[str, set[str]]]:
    """{package: {imported package: files}}, function-level imports included."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        package = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "onereason":  # from onereason import rundir
                names = [f"onereason.{a.name}" for a in node.names]
            else:
                names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "onereason" and len(parts) > 1 and parts[1] != package:
                    graph[package][parts[1]].add(str(rel))
    return graph


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages | modules == set(LAYERS)


def test_imports_only_point_down():
    upward = [f"{pkg} → {dep} ({', '.join(sorted(files))})"
              for pkg, deps in imports().items() for dep, files in deps.items()
              if LAYERS.index(dep) > LAYERS.index(pkg)]
    assert upward == []


if __name__ == "__main__":
    for pkg in LAYERS:
        deps = imports().get(pkg, {})
        print(f"{pkg:>10} → {', '.join(sorted(deps, key=LAYERS.index)) or '-'}")
