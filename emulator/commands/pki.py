"""`roost-sim pki`: the private PKI of the local cloud (root CA, gateway chain, device certificates).

    roost-sim pki root [--dir DIR]                              create (or show) the root CA
    roost-sim pki gateway --hostname NAME [--hostname ...]      root -> gateway CA -> gateway server certificate
    roost-sim pki device ID [--self-signed]                     an X.509 device identity; prints its thumbprint
    roost-sim pki show                                          list certificates with subjects and expiry

The default directory is the hub emulator's (``<state dir>/pki``), so `roost-sim hub serve` presents the same
root. Private keys are written 0600.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from emulator.hub.server import default_state_dir


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("pki", help="root CA, gateway chain and device certificates",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="PKI directory (default: <hub state dir>/pki)")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="pki_command", metavar="PKI_COMMAND")
    root = sub.add_parser("root", help="create the root CA if missing and print its path")
    root.set_defaults(func=_root)
    gateway = sub.add_parser("gateway", help="issue the gateway's server certificate through a gateway CA")
    gateway.add_argument("--hostname", action="append", required=True, metavar="NAME",
                         help="host name or IP address the gateway is reached by (repeatable)")
    gateway.set_defaults(func=_gateway)
    device = sub.add_parser("device", help="issue an X.509 device certificate (CN = device id)")
    device.add_argument("device_id")
    device.add_argument("--self-signed", action="store_true",
                        help="self-signed (register its thumbprint) instead of signed by the root CA")
    device.add_argument("--days", type=int, default=365)
    device.set_defaults(func=_device)
    show = sub.add_parser("show", help="list the certificates in the directory")
    show.set_defaults(func=_show)


def _pki(args: argparse.Namespace):
    from emulator.pki import Pki

    return Pki(args.dir or default_state_dir() / "pki")


def _root(args: argparse.Namespace) -> int:
    root = _pki(args).root()
    print(f"root CA: {root.cert_path}\n  key:   {root.key_path} (0600)\n  sha1:  {root.thumbprint}")
    return 0


def _gateway(args: argparse.Namespace) -> int:
    pki = _pki(args)
    try:
        gateway = pki.gateway(args.hostname)
    except ValueError as exc:
        print(f"roost-sim pki gateway: {exc}", file=sys.stderr)
        return 2
    print(f"gateway certificate for {', '.join(args.hostname)}:\n"
          f"  chain: {gateway.chain_path} (gateway + gateway CA; serve this)\n"
          f"  key:   {gateway.key_path} (0600)\n"
          f"  trust: {pki.root().cert_path} (devices pass this PEM as server_verification_cert)")
    return 0


def _device(args: argparse.Namespace) -> int:
    if args.days < 1:
        print("roost-sim pki device: --days must be at least 1", file=sys.stderr)
        return 2
    device = _pki(args).device(args.device_id, self_signed=args.self_signed, days=args.days)
    kind = "self-signed" if args.self_signed else "signed by the root CA"
    print(f"device {args.device_id} ({kind}):\n  cert:  {device.cert_path}\n  key:   {device.key_path} (0600)\n"
          f"  thumbprint (SHA-1):   {device.thumbprint}\n  thumbprint (SHA-256): {device.thumbprint_sha256}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from cryptography import x509

    pki = _pki(args)
    certs = sorted(p for p in pki.directory.glob("*.pem") if not p.name.endswith((".key.pem", ".chain.pem")))
    if not certs:
        print(f"no certificates in {pki.directory}; create the root with `roost-sim pki root`")
        return 1
    for path in certs:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        print(f"{path.name:32} {cert.subject.rfc4514_string():40} issuer {cert.issuer.rfc4514_string():32} "
              f"until {cert.not_valid_after_utc:%Y-%m-%d}")
    return 0
