"""swtpm fixtures: a fresh TPM per test, on its own loopback address.

Manufacturing (swtpm_setup: EK, EK certificate, SRK) takes about a second, so each worker manufactures
one template per session and every test's TPM starts from a copy of it: separate process, separate state,
same endorsement seed. ``other_swtpm`` comes from a second template, so its EK differs.

Other rooms: `SwTpm.manufactured(tmp_path / "tpm", host=loopback_address)` from emulator.board.swtpm is all
these fixtures do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.board.swtpm import SwTpm, manufacture


@pytest.fixture
def loaded_handles():
    """Transient objects and sessions a TPM holds right now (all must be gone after each roost call)."""
    from tpm2_pytss import ESAPI, TPM2_CAP

    def handles(tcti: str) -> list[int]:
        with ESAPI(tcti) as ectx:
            found = []
            for first in (0x80000000, 0x02000000, 0x03000000):
                _, data = ectx.get_capability(TPM2_CAP.HANDLES, first, 64)
                found += [int(h) for h in data.data.handles]
            return found
    return handles


@pytest.fixture(scope="session")
def swtpm_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return manufacture(tmp_path_factory.mktemp("swtpm-template"))


@pytest.fixture(scope="session")
def other_swtpm_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return manufacture(tmp_path_factory.mktemp("swtpm-other-template"))


@pytest.fixture
def swtpm(tmp_path: Path, loopback_address: str, swtpm_template: Path) -> Iterator[SwTpm]:
    """A running swtpm with an EK (0x81010001), its certificate and an SRK (0x81000001)."""
    with SwTpm.manufactured(tmp_path / "swtpm", template=swtpm_template, host=loopback_address) as tpm:
        yield tpm


@pytest.fixture
def other_swtpm(tmp_path: Path, loopback_address: str, other_swtpm_template: Path) -> Iterator[SwTpm]:
    """A second, different TPM (another endorsement key)."""
    with SwTpm.manufactured(tmp_path / "other-swtpm", template=other_swtpm_template, host=loopback_address,
                            port=2331) as tpm:
        yield tpm
