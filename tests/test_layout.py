"""The package's rooms import one way only (DESIGN.md, "Layout"):

    leaves (errors, files, models, accuracy, cuda, fake_cuda, tensorrt_api, onnxruntime_sessions, version)
      <- media <- build_engine <- calibration <- engine <- runtime <- api <- batch <- cli

Every import, at module level or inside a function, must point to the same room or a
lower one, the graph must have no cycle, and no module may take another module's
_private names. The checks read the source (AST), so lazy imports count too.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "trt_matte"
PACKAGE = PACKAGE_DIR.name
ROOMS = ["leaf", "media", "build_engine", "calibration", "engine", "runtime", "api", "batch", "cli"]
LEAVES = {"errors", "interrupts", "files", "models", "accuracy", "cuda", "fake_cuda", "tensorrt_api", "onnxruntime_sessions",
          "version"}


def module_name(path: Path, package_dir: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_edges(package_dir: Path) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> package modules it imports, 'A takes _x from B' lines)."""
    modules = {module_name(path, package_dir): path for path in package_dir.rglob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    if target in modules and target != name:
                        edges[name].add(target)
                        if target == base and alias.name.startswith("_") and not alias.name.startswith("__"):
                            private.append(f"{name} takes {alias.name} from {target}")
            elif isinstance(node, ast.Import):
                edges[name].update(alias.name for alias in node.names if alias.name in modules)
    return edges, private


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph has none."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        trail.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return trail[trail.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        trail.pop()
        return []

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def room(module: str) -> int:
    parts = module.split(".")[1:]
    if not parts:
        return len(ROOMS)  # the package's __init__ re-exports the API: above everything
    if parts[0] in LEAVES:
        return 0
    if parts[0] == "__main__":
        return ROOMS.index("cli")
    return ROOMS.index(parts[0])


def test_imports_point_down_only():
    edges, _ = import_edges(PACKAGE_DIR)
    upward = sorted(f"{source} ({ROOMS[room(source)] if room(source) < len(ROOMS) else 'package'}) imports "
                    f"{target} ({ROOMS[room(target)]})"
                    for source, targets in edges.items() for target in targets if room(target) > room(source))
    assert not upward, "imports pointing up:\n  " + "\n  ".join(upward)


def test_the_package_has_no_import_cycle():
    edges, _ = import_edges(PACKAGE_DIR)
    assert len(edges) > 30
    assert find_cycle(edges) == []


def test_no_module_takes_another_modules_private_names():
    _, private = import_edges(PACKAGE_DIR)
    assert private == []


def test_every_module_sits_in_a_known_room():
    edges, _ = import_edges(PACKAGE_DIR)
    strays = [name for name in edges if name != PACKAGE and name.split(".")[1] not in {*LEAVES, *ROOMS, "__main__"}]
    assert strays == [], f"modules outside the rooms DESIGN.md names: {strays}"


def test_the_checks_catch_a_cycle_an_upward_import_and_a_private_name(tmp_path):
    package = tmp_path / PACKAGE
    (package / "media").mkdir(parents=True)
    (package / "runtime").mkdir()
    (package / "__init__.py").write_text("")
    (package / "media" / "__init__.py").write_text("")
    (package / "runtime" / "__init__.py").write_text("")
    (package / "media" / "reader.py").write_text("def read():\n    from ..runtime.video import _helper\n")
    (package / "runtime" / "video.py").write_text("from ..media.reader import read\n\ndef _helper():\n    pass\n")
    edges, private = import_edges(package)
    assert find_cycle(edges) == [f"{PACKAGE}.media.reader", f"{PACKAGE}.runtime.video", f"{PACKAGE}.media.reader"]
    assert private == [f"{PACKAGE}.media.reader takes _helper from {PACKAGE}.runtime.video"]
    assert room(f"{PACKAGE}.runtime.video") > room(f"{PACKAGE}.media.reader")
