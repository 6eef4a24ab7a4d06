"""`roost run` starts through the same CLI as every other command: none of them may load heavy libraries at import.

cryptography alone is ~8 MB resident on a device whose memory goal is 45 MB; signing, verifying and certificate
parsing load it when they actually run.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("cryptography", "tpm2_pytss")

PROBE = """
import json, sys
from agent import cli, commands
cli.build_parser("roost", "", commands, "0")   # registers every subcommand, as `roost run` does
import agent.daemon, firmware.engine, firmware.bundle
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
"""


def _loaded(probe: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_cli_and_daemon_import_no_heavy_library():
    assert _loaded(PROBE % (HEAVY,)) == []


def test_the_probe_sees_a_heavy_import_when_one_happens():
    # Guards the test: if the probe could not see cryptography, the test above would pass vacuously.
    probe = (PROBE % (HEAVY,)).replace("print(json.dumps", "firmware.engine.keys.generate()\nprint(json.dumps", 1)
    assert "cryptography" in _loaded(probe)
