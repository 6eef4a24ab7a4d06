"""``roost doctor``: the checks a field engineer runs when a device does not reach its hub.

It is the IoT Edge downstream-device troubleshooting list as one command: configuration, DNS, the ports
(8883 MQTT, 5671 AMQP, 443 HTTPS/websockets), the TLS chain against the configured root CA, the host name
against the certificate, clock skew, credential and token lifetimes, the board and its sensors, and the TPM.
Each check passes, warns, fails or is skipped, and every warning or failure carries the fix.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.config import MQTT_PORT, WEBSOCKET_PORT
from agent.identity.dps import split_host
from agent.identity.tls_check import probe_tls, tcp_error

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
SKEW_WARN_S = 30.0
SKEW_FAIL_S = 300.0
EXPIRY_WARN_DAYS = 30


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Target:
    """Where the device connects: the gateway if there is one, else its hub; None before provisioning."""

    host: str | None
    hub: str | None
    via_gateway: bool
    ca_pem: str | None
    creds: Any = None


# -- individual checks ------------------------------------------------------------------------------------
def check_dns(host: str, what: str) -> Check:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        return Check(f"dns {what}", FAIL, f"{host} does not resolve ({exc.strerror})",
                     f"check /etc/resolv.conf and the spelling of {host}; for a gateway add it to DNS or /etc/hosts")
    addresses = sorted({info[4][0] for info in infos})
    return Check(f"dns {what}", PASS, f"{host} -> {', '.join(addresses)}")


def check_port(host: str, port: int, purpose: str, required: bool, timeout: float) -> Check:
    if (exc := tcp_error(host, port, timeout)) is not None:
        status = FAIL if required else WARN
        return Check(f"port {port}", status, f"{host}:{port} ({purpose}) is not reachable: {exc}",
                     f"open outbound TCP {port} to {host} in every firewall on the way"
                     + ("" if required else f" (only needed for {purpose})"))
    return Check(f"port {port}", PASS, f"{host}:{port} ({purpose}) accepts connections")


def check_tls(target: Target, timeout: float, port: int) -> list[Check]:
    probe = probe_tls(target.host, port, target.ca_pem, timeout=timeout)
    if probe.kind == "unreachable":
        return [Check("tls chain", SKIP, f"port {port} is not reachable, so TLS was not tried", probe.fix)]
    if probe.kind in ("wrong-ca", "expired", "tls"):
        return [Check("tls chain", FAIL, probe.detail, probe.fix),
                Check("tls hostname", SKIP, "the chain is not trusted, so the name was not checked")]
    chain = Check("tls chain", PASS, f"{target.host}:{port} chains to "
                  f"{'the configured root CA' if target.ca_pem else 'the system CA store'} "
                  f"(issuer {probe.issuer}, valid until {probe.not_after})")
    if probe.kind == "hostname-mismatch":
        return [chain, Check("tls hostname", FAIL, probe.detail, probe.fix)]
    return [chain, Check("tls hostname", PASS, f"the certificate names {target.host}")]


def server_time(url: str, timeout: float) -> float | None:
    """The time a web server reports in its Date header (the certificate is not checked: only time is read)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return None
    request = f"HEAD {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock: Any = raw
            if parts.scheme == "https":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(raw, server_hostname=host)
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
    except (OSError, ssl.SSLError):
        return None
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "date":
            try:
                return email.utils.parsedate_to_datetime(value.strip()).timestamp()
            except (TypeError, ValueError):
                return None
    return None


def check_clock(reference_url: str | None, now: float, timeout: float,
                time_status: Callable[[], dict] | None) -> Check:
    reference = server_time(reference_url, timeout) if reference_url else None
    if reference is not None:
        skew = now - reference
        where = urllib.parse.urlsplit(reference_url).netloc
        text = f"device clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} {where}"
        fix = "enable time sync (timedatectl set-ntp true) and make sure NTP (UDP 123) is allowed out"
        if abs(skew) > SKEW_FAIL_S:
            return Check("clock skew", FAIL, text + "; SAS tokens and certificates will be refused", fix)
        if abs(skew) > SKEW_WARN_S:
            return Check("clock skew", WARN, text, fix)
        return Check("clock skew", PASS, text)
    if time_status is not None:
        try:
            status = time_status()
        except Exception as exc:
            return Check("clock skew", WARN, f"no time reference reachable and time sync status unknown ({exc})",
                         "pass --time-url with an HTTPS server the device can reach")
        if status.get("NTPSynchronized") == "yes":
            return Check("clock skew", PASS, "no time reference reachable, but the system clock is NTP-synchronized")
        return Check("clock skew", WARN, "no time reference reachable and the clock is not NTP-synchronized",
                     "enable time sync: timedatectl set-ntp true")
    return Check("clock skew", SKIP, "no time reference configured")


def check_credentials(config: Any, target: Target, now: float) -> Check:
    """Certificate validity (X.509 identities) or the SAS token lifetime and expiry."""
    ident = config.identity
    if ident.method == "x509" or (target.creds is not None and target.creds.x509 is not None):
        from cryptography import x509

        path = ident.cert_file or target.creds.x509.cert_file
        try:
            cert = x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
        except (OSError, ValueError) as exc:
            return Check("credential expiry", FAIL, f"device certificate {path} cannot be read: {exc}",
                         "point identity.cert_file at the device's PEM certificate")
        end, start = cert.not_valid_after_utc.timestamp(), cert.not_valid_before_utc.timestamp()
        if now >= end:
            return Check("credential expiry", FAIL, f"device certificate expired {cert.not_valid_after_utc:%Y-%m-%d}",
                         "issue a new device certificate from your CA and update the DPS enrollment if needed")
        if now < start:
            return Check("credential expiry", FAIL,
                         f"device certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}",
                         "the device clock is probably wrong: enable time sync")
        days = (end - now) / 86400
        if days < EXPIRY_WARN_DAYS:
            return Check("credential expiry", WARN, f"device certificate expires in {days:.0f} days",
                         "renew the device certificate before it expires")
        return Check("credential expiry", PASS, f"device certificate valid for {days:.0f} more days")
    ttl, renew = config.hub.sas_ttl_s, config.hub.renew_before_s
    if target.creds is not None and target.creds.sign is not None:
        token = target.creds.sas_token(ttl, now=now)
        expiry = int(urllib.parse.parse_qs(token.split(" ", 1)[1])["se"][0])
        if expiry <= now:
            return Check("token expiry", FAIL, "a token signed now would already be expired",
                         "check hub.sas_ttl_s and the device clock")
        return Check("token expiry", PASS, f"SAS tokens live {ttl} s and are renewed {renew} s before expiry; "
                     f"one signed now expires {dt.datetime.fromtimestamp(expiry, dt.UTC):%Y-%m-%d %H:%M:%S}Z")
    return Check("token expiry", PASS if renew < ttl else FAIL,
                 f"SAS tokens live {ttl} s and are renewed {renew} s before expiry")


def check_trust_anchors(config: Any, state_dir: Path, now: float) -> Check:
    from agent.identity import trust_store
    from agent.identity.errors import TrustError

    try:
        anchors = trust_store(config, state_dir).anchors()
    except TrustError as exc:
        return Check("trust anchors", FAIL, exc.problem, exc.fix)
    if not anchors:
        return Check("trust anchors", PASS, "the system CA store is used (hub.ca_file is empty)")
    soon = [a for a in anchors
            if dt.datetime.fromisoformat(a.not_after).timestamp() - now < EXPIRY_WARN_DAYS * 86400]
    if soon:
        return Check("trust anchors", WARN, f"{soon[0].subject} expires {soon[0].not_after[:10]}",
                     "add the renewed root CA (addTrustedCertificate method) before it expires")
    return Check("trust anchors", PASS, f"{len(anchors)} root CA(s): " + "; ".join(a.subject for a in anchors))


def check_board(config: Any) -> list[Check]:
    try:
        from hal.board import load_board
        from hal.platform import load_platform
        from hal.sensors import open_sensors
    except ImportError as exc:
        return [Check("board", SKIP, f"the hardware layer is not installed ({exc})")]
    try:
        board = load_board(config.device.board)
    except (KeyError, ValueError, OSError) as exc:
        return [Check("board", FAIL, f"board profile {config.device.board!r} cannot be loaded: {exc}",
                      "set device.board to one of the profiles in boards/ or to a TOML file path")]
    try:
        platform = load_platform(config.device.platform, board)
    except Exception as exc:
        return [Check("board", FAIL, f"platform {config.device.platform!r} cannot start: {exc}",
                      "check device.platform, and that the agent user is in the i2c, dialout and gpio groups")]
    checks = [Check("board", PASS, f"{board.name} on the {config.device.platform} platform")]
    try:
        for sensor in open_sensors(board, platform):
            reading = sensor.read()
            if reading.error:
                checks.append(Check(f"sensor {sensor.id}", FAIL, f"{reading.driver}: {reading.error}",
                                    "check wiring, the bus and address in the board profile (roost sensors scan)"))
            else:
                values = ", ".join(f"{k}={v:g}" for k, v in sorted(reading.values.items())[:4])
                checks.append(Check(f"sensor {sensor.id}", PASS, f"{reading.chip or reading.driver}: {values}"))
    except Exception as exc:
        checks.append(Check("sensors", FAIL, f"sensors cannot be opened: {exc}",
                            "check the board profile's sensors and buses"))
    finally:
        try:
            platform.close()
        except Exception:
            pass
    return checks


def check_tpm(config: Any, timeout: float) -> Check:
    needed = config.identity.method == "tpm"
    tcti = config.identity.tpm_tcti
    kind, _, spec = tcti.partition(":")
    if kind == "device":
        path = spec or "/dev/tpmrm0"
        if not os.path.exists(path):
            return Check("tpm", FAIL if needed else SKIP, f"no TPM at {path}",
                         "enable the TPM (dtoverlay=tpm-slb9670 on a Pi) or use another identity method")
        if not os.access(path, os.R_OK | os.W_OK):
            return Check("tpm", FAIL if needed else WARN, f"{path} exists but this user cannot open it",
                         "add the agent user to the tss group: usermod -aG tss roost")
        return Check("tpm", PASS, f"TPM device {path} is present and accessible")
    if kind in ("swtpm", "mssim"):
        fields = dict(part.partition("=")[::2] for part in spec.split(",") if "=" in part)
        host, port = fields.get("host", "localhost"), int(fields.get("port", "2321"))
        if (exc := tcp_error(host, port, timeout)) is not None:
            return Check("tpm", FAIL if needed else SKIP, f"software TPM {host}:{port} is not reachable ({exc})",
                         "start swtpm, or fix identity.tpm_tcti")
        return Check("tpm", PASS, f"software TPM answers at {host}:{port}")
    return Check("tpm", WARN if needed else SKIP, f"TCTI {tcti!r} is not checked by doctor",
                 "use device:/dev/tpmrm0 or swtpm:host=...,port=...")


# -- putting it together -----------------------------------------------------------------------------------
def find_target(config: Any, state_dir: Path) -> tuple[Target, list[Check]]:
    """Where the device connects, without provisioning: the gateway, the connection string, or the cache."""
    from agent.identity import assignment, trust_store
    from agent.identity.errors import IdentityError

    checks: list[Check] = []
    creds = None
    hub = None
    method = config.identity.method
    try:
        ca_pem = trust_store(config, state_dir).bundle()
    except IdentityError:
        ca_pem = None
    if method == "connection-string":
        from agent.identity import resolve

        try:
            creds = resolve(config, state_dir)
            hub = creds.hostname
            checks.append(Check("identity", PASS, f"connection string for device {creds.device_id} on {hub}"))
        except IdentityError as exc:
            checks.append(Check("identity", FAIL, exc.problem, exc.fix))
    else:
        cached = assignment.load(state_dir)
        if cached is not None:
            hub = cached.hostname
            checks.append(Check("identity", PASS, f"{method}: provisioned as {cached.device_id} on {hub} "
                                f"({dt.datetime.fromtimestamp(cached.assigned_at, dt.UTC):%Y-%m-%d %H:%M}Z)"))
            if method == "symmetric":
                from agent.identity import resolve

                try:
                    creds = resolve(config, state_dir)
                except IdentityError as exc:
                    checks.append(Check("identity", FAIL, exc.problem, exc.fix))
        elif method in ("symmetric", "x509"):
            checks.append(Check("identity", WARN, f"{method}: not provisioned yet (no cached DPS assignment)",
                                "run roost provision, then roost doctor again for the hub checks"))
        else:
            checks.append(Check("identity", PASS, "tpm: the hub is known after TPM attestation (roost tpm)"))
    gateway = config.hub.gateway_hostname or (creds.gateway_hostname if creds else None)
    host = gateway or hub
    return Target(host, hub, bool(gateway), ca_pem, creds), checks


def run_checks(config: Any, *, state_dir: Path | None = None, now: float | None = None, timeout: float = 5.0,
               time_url: str | None = None, board: bool = True,
               time_status: Callable[[], dict] | None = None) -> list[Check]:
    """Every check, in the order an engineer would work through them."""
    state_dir = Path(state_dir or config.state_dir)
    now = time.time() if now is None else now
    target, checks = find_target(config, state_dir)
    ident = config.identity
    if ident.method in ("symmetric", "x509", "tpm"):
        # TPM attestation only exists in DPS's HTTPS API; the SDK's symmetric/X.509 registration uses MQTT
        # (over WebSockets on 443 with hub.transport = "mqtt-ws").
        tpm = ident.method == "tpm"
        dps_host, dps_port = split_host(ident.provisioning_host, 443 if tpm else config.hub.port)
        how = "HTTPS" if tpm else "MQTT over WebSockets" if config.hub.websockets else "MQTT"
        checks.append(dns := check_dns(dps_host, "provisioning service"))
        if dns.status == PASS:
            checks.append(check_port(dps_host, dps_port, f"DPS over {how}", True, timeout))
    if target.host:
        what = "gateway" if target.via_gateway else "hub"
        checks.append(dns := check_dns(target.host, what))
        if dns.status == PASS:
            # The port the agent's transport needs must be open; the others are worth knowing about.
            websockets = config.hub.websockets
            checks.append(check_port(target.host, MQTT_PORT, "MQTT", not websockets, timeout))
            checks.append(check_port(target.host, 5671, "AMQP", False, timeout))
            checks.append(check_port(target.host, WEBSOCKET_PORT, "MQTT over WebSockets and file upload" if websockets
                                     else "HTTPS, websockets and file upload", websockets, timeout))
            checks.extend(check_tls(target, timeout, config.hub.port))
    checks.append(check_trust_anchors(config, state_dir, now))
    if time_url is None and ident.method in ("symmetric", "x509", "tpm"):
        time_url = f"https://{split_host(ident.provisioning_host, 443)[0]}/"
    elif time_url is None and target.hub:
        time_url = f"https://{target.hub}/"
    checks.append(check_clock(time_url, now, timeout, time_status))
    checks.append(check_credentials(config, target, now))
    if board:
        checks.extend(check_board(config))
    checks.append(check_tpm(config, timeout))
    return checks


def passed(checks: list[Check], strict: bool = False) -> bool:
    bad = {FAIL, WARN} if strict else {FAIL}
    return not any(c.status in bad for c in checks)


def format_text(checks: list[Check]) -> str:
    marks = {PASS: "ok  ", WARN: "warn", FAIL: "FAIL", SKIP: "skip"}
    width = max((len(c.name) for c in checks), default=10)
    lines = []
    for c in checks:
        lines.append(f"[{marks[c.status]}] {c.name:<{width}}  {c.detail}")
        if c.fix and c.status in (FAIL, WARN):
            lines.append(f"       {'':<{width}}  fix: {c.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    lines.append(f"{len(checks)} checks: {failed} failed, {warned} warnings")
    return "\n".join(lines)
