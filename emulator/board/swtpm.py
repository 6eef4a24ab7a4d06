"""A software TPM 2.0 (swtpm) per test: its own state directory, address and port, an EK certificate.

    with SwTpm.manufactured(tmp_path / "tpm", host="127.21.1.2") as tpm:
        ESAPI(tpm.tcti)          # "swtpm:host=127.21.1.2,port=2321"

``manufacture`` runs swtpm_setup once (EK 0x81010001 with its certificate in NV 0x01C00002, an SRK at
0x81000001, a platform certificate), the way a TPM leaves the factory. Setup costs about a second, so
``SwTpm.manufactured(..., template=dir)`` copies an already manufactured state instead: each TPM is still a
separate process with separate state, just born with the same endorsement seed as its template.
There is no resource manager in front of swtpm (the `swtpm:` TCTI talks to the TPM directly), like /dev/tpm0.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

STATE_FILE = "tpm2-00.permall"
DEFAULT_PORT = 2321          # the TCG simulator's customary command port; the control port is the next one


class SwTpmError(RuntimeError):
    """swtpm could not be set up or started; the message carries its output."""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SwTpmError(f"{tool} is not installed: apt install swtpm swtpm-tools (make setup does it)")
    return path


def manufacture(state_dir: Path) -> Path:
    """Create a fresh TPM state in ``state_dir`` as a manufacturer would (EK, EK cert, SRK, platform cert)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [_require("swtpm_setup"), "--tpm2", "--tpmstate", str(state_dir), "--create-ek-cert",
           "--create-platform-cert", "--create-spk", "--overwrite"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or not (state_dir / STATE_FILE).exists():
        raise SwTpmError(f"swtpm_setup failed ({done.returncode}): {done.stdout}{done.stderr}")
    return state_dir


def _free_port_pair(host: str) -> int:
    """A port P such that P and P+1 are both free on ``host`` right now (2321 when it is)."""
    if _port_free(host, DEFAULT_PORT) and _port_free(host, DEFAULT_PORT + 1):
        return DEFAULT_PORT
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        if port < 65535 and _port_free(host, port + 1):
            return port
    raise SwTpmError(f"no free pair of TCP ports on {host}")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class SwTpm:
    """One running swtpm process. Use as a context manager, or call start() and stop()."""

    def __init__(self, state_dir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port if port is not None else _free_port_pair(host)
        self._process: subprocess.Popen | None = None
        self._log = self.state_dir / "swtpm.log"

    @classmethod
    def manufactured(cls, state_dir: Path, *, template: Path | None = None, host: str = "127.0.0.1",
                     port: int | None = None) -> SwTpm:
        """A TPM whose state is freshly manufactured, or copied from ``template`` (a manufactured state dir)."""
        state_dir = Path(state_dir)
        if template is None:
            manufacture(state_dir)
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(template) / STATE_FILE, state_dir / STATE_FILE)
        return cls(state_dir, host=host, port=port)

    @property
    def tcti(self) -> str:
        """The TCTI string for ESAPI, tpm2-tools (--tcti) and roost's identity.tpm_tcti."""
        return f"swtpm:host={self.host},port={self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> SwTpm:
        if self.running:
            return self
        cmd = [_require("swtpm"), "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir}",
               "--server", f"type=tcp,port={self.port},bindaddr={self.host}",
               "--ctrl", f"type=tcp,port={self.port + 1},bindaddr={self.host}",
               "--flags", "not-need-init,startup-clear", "--log", f"file={self._log},level=1"]
        self._process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                self._process = None
                raise SwTpmError(f"swtpm exited at start on {self.host}:{self.port}: {err.strip()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise SwTpmError(f"swtpm did not listen on {self.host}:{self.port} within {timeout_s} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()

    def reboot(self) -> None:
        """Power-cycle: state in NV survives, PCRs and loaded objects start over (TPM2_Startup(CLEAR))."""
        self.stop()
        self.start()

    def extend_pcr(self, index: int, data: bytes) -> None:
        """Measure ``data`` into PCR ``index`` (all banks), like a boot stage that loaded something else."""
        from tpm2_pytss import ESAPI, ESYS_TR

        if not 0 <= index <= 23:
            raise ValueError(f"PCR index {index} is not 0..23")
        with ESAPI(self.tcti) as ectx:
            ectx.pcr_event(getattr(ESYS_TR, f"PCR{index}"), data)

    def __enter__(self) -> SwTpm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # a test that forgot stop() must not leave swtpm behind
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass

