"""The layering of docs/architecture.md, checked on every module's imports.

Data flows down: cli -> study -> report -> {online, analysis, offline, train} -> core ->
metrics. A module may import only the layers listed for its own; the private root modules
(``sslwatch._version``, ``sslwatch._files``) serve every layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sslwatch"
SHARED = {"_version", "_files"}
BELOW = {
    "metrics": set(),
    "core": {"metrics"},
    "analysis": {"core", "metrics"},
    # a sweep makes augmented views with train.augment; train validates with offline.embed
    "offline": {"train", "core", "metrics"},
    "train": {"offline", "core", "metrics"},
    # sinks write monitor values into the offline results store
    "online": {"offline", "core", "metrics"},
    "report": {"analysis", "offline", "core", "metrics"},
    "study": {"report", "analysis", "offline", "train", "online", "core", "metrics"},
    "examples": set(),
}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else "root"


def _imported_layers(path: Path) -> set[str]:
    """First component below ``sslwatch`` of every sslwatch import in the module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "sslwatch":  # from sslwatch import metrics / evaluate
                names = [f"sslwatch.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "sslwatch":
                found.add(parts[1] if len(parts) > 1 else "sslwatch")
    return found


def test_every_module_is_in_a_known_layer() -> None:
    layers = {_layer(p) for p in MODULES}
    assert layers <= {*BELOW, "cli", "root"}, sorted(layers - {*BELOW, "cli", "root"})


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_flow_down(path: Path) -> None:
    layer = _layer(path)
    if layer == "cli":  # the command-line adapter sees every layer
        return
    if layer == "root":  # the public face imports every layer but the CLI
        assert path.name == "__main__.py" or "cli" not in _imported_layers(path)
        return
    allowed = BELOW[layer] | {layer} | SHARED
    bad = _imported_layers(path) - allowed
    assert not bad, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(bad)}"


def test_metrics_import_nothing_outside_metrics() -> None:
    for path in (PACKAGE / "metrics").rglob("*.py"):
        assert _imported_layers(path) <= {"metrics"}, path
