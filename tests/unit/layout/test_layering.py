"""The dependency rule of DESIGN.md: the product (agent/, hal/, firmware/) never imports the emulators.

Emulators are swapped in at the edges (a platform name, an address, a TCTI string, a boot backend name),
so a product module importing ``emulator`` would mean a test-only path inside the product.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = ("agent", "hal", "firmware", "boards")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module", "__import__"
        ) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.append((node.lineno, node.args[0].value))
    return found


def product_files() -> list[Path]:
    return sorted(p for top in PRODUCT for p in (ROOT / top).rglob("*.py"))


def test_the_product_has_modules_to_check():
    # Guards the test itself: an empty walk would pass vacuously.
    assert len(product_files()) > 50


@pytest.mark.parametrize("top", PRODUCT)
def test_product_never_imports_the_emulator(top):
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in product_files() if path.relative_to(ROOT).parts[0] == top
        for line, name in _imports(path)
        if name == "emulator" or name.startswith("emulator.")
    ]
    assert offenders == [], "the product must not import the emulator:\n" + "\n".join(offenders)


def test_the_checker_sees_an_emulator_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom emulator.board import platform\nimportlib.import_module('emulator.hub')\n")
    names = [name for _, name in _imports(bad)]
    assert "emulator.board" in names and "emulator.hub" in names


def test_drivers_import_only_what_micropython_has():
    # hal/drivers run unchanged on a Pico: only these modules exist there (plus the drivers' own helpers).
    allowed = {"struct", "time", "micropython", "hal.errors", "hal.drivers", "hal.clock"}
    offenders = []
    for path in sorted((ROOT / "hal" / "drivers").glob("*.py")):
        for line, name in _imports(path):
            if name not in allowed and not name.startswith("hal.drivers."):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert offenders == [], "drivers must stay runtime-neutral:\n" + "\n".join(offenders)
