"""The drivers on real MicroPython: the driver tests under the unix port, and the armv6m mpy-cross gate.

Each test module of tests/micropython runs in its own interpreter with a fixed heap, first from
source (96 KB: the compiler needs room) and then as armv6m .mpy bytecode, the way a Pico loads it
(64 KB, a third of a Pico W's free heap).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MPY_TESTS = ROOT / "tests" / "micropython"
RUNNER = MPY_TESTS / "run.py"
BIN = Path(sys.executable).parent
MICROPYTHON = BIN / "micropython"
MPY_CROSS = BIN / "mpy-cross"
# Everything a board needs: the package markers, the errors, the clock and every driver.
NEUTRAL = sorted(
    [ROOT / "hal" / "__init__.py", ROOT / "hal" / "errors.py", ROOT / "hal" / "clock.py",
     *(ROOT / "hal" / "drivers").glob("*.py")]
)
MODULES = sorted(p.stem for p in MPY_TESTS.glob("test_*.py"))


def _test_count(module: str) -> int:
    tree = ast.parse((MPY_TESTS / f"{module}.py").read_text())
    return sum(1 for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"))


def _run_micropython(root: Path, module: str, heap: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MICROPYTHON), "-X", f"heapsize={heap}", str(RUNNER), str(root), module],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime-neutral modules compiled with mpy-cross -march=armv6m into a tree of .mpy files."""
    out = tmp_path_factory.mktemp("mpy")
    for source in NEUTRAL:
        target = out / source.relative_to(ROOT).with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [str(MPY_CROSS), "-march=armv6m", "-o", str(target), str(source.relative_to(ROOT))],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, f"mpy-cross rejected {source.relative_to(ROOT)}:\n{result.stderr}"
    return out


def test_there_are_driver_tests_for_every_driver() -> None:
    drivers = {p.stem for p in (ROOT / "hal" / "drivers").glob("*.py")} - {"__init__", "compat", "register"}
    covered = set()
    for module in MODULES:
        text = (MPY_TESTS / f"{module}.py").read_text()
        covered |= {d for d in drivers if f"hal.drivers.{d} import" in text}
    assert covered == drivers


@pytest.mark.parametrize("module", MODULES)
def test_driver_tests_pass_under_micropython(module: str, tmp_path: Path) -> None:
    result = _run_micropython(ROOT, module, "96k", tmp_path)
    expected = _test_count(module)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{expected} passed, 0 failed on micropython" in result.stdout, result.stdout


def test_every_neutral_module_compiles_for_armv6m(compiled: Path) -> None:
    for source in NEUTRAL:
        mpy = compiled / source.relative_to(ROOT).with_suffix(".mpy")
        header = mpy.read_bytes()[:2]
        assert header == b"M\x06", f"{mpy.name}: not an .mpy v6 file ({header!r})"


@pytest.mark.parametrize("module", MODULES)
def test_compiled_drivers_pass_under_micropython(module: str, compiled: Path) -> None:
    # cwd is the compiled tree and it is first on sys.path, so no .py source can stand in for the bytecode.
    result = _run_micropython(compiled, module, "64k", compiled)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"hal loaded from {compiled}/hal/errors.mpy" in result.stdout, result.stdout
    assert f"{_test_count(module)} passed, 0 failed on micropython" in result.stdout, result.stdout


def test_runner_fails_when_a_driver_test_fails(tmp_path: Path) -> None:
    # The gate itself must be able to fail: a broken copy of a driver makes the runner exit 1.
    broken = tmp_path / "root"
    (broken / "hal" / "drivers").mkdir(parents=True)
    for source in NEUTRAL:
        target = broken / source.relative_to(ROOT)
        text = source.read_text()
        if source.name == "sht4x.py":
            text = text.replace("crc = 0xFF", "crc = 0x00")
        target.write_text(text)
    result = _run_micropython(broken, "test_driver_sht4x", "96k", tmp_path)
    assert result.returncode == 1
    assert "FAIL test_driver_sht4x::test_crc8_datasheet_vector" in result.stdout
