"""`roost keys`: signing keys for firmware bundles.

    roost keys generate NAME [--algorithm ed25519|ecdsa-p256]   NAME.key (private, 0600) and NAME.pem (public)
    roost keys list [--dir /etc/roost/keys]                      trusted public keys and their ids

Keep NAME.key on the release machine (or offline); copy NAME.pem into each device's trusted key directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from firmware import keys
from firmware.errors import FirmwareError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="generate and list firmware signing keys", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND")
    gen = sub.add_parser("generate", help="create a new signing key pair")
    gen.add_argument("name", help="output path without extension: writes NAME.key and NAME.pem")
    gen.add_argument("--algorithm", choices=keys.ALGORITHMS, default="ed25519", help="default: ed25519")
    gen.set_defaults(func=_generate)
    lst = sub.add_parser("list", help="show the trusted public keys of a directory")
    lst.add_argument("--dir", default="/etc/roost/keys", help="trusted key directory (default: /etc/roost/keys)")
    lst.set_defaults(func=_list)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _fail(exc: FirmwareError) -> int:
    print(f"roost keys: error: {exc}", file=sys.stderr)
    return exc.exit_code


def _generate(args: argparse.Namespace) -> int:
    private, public = Path(args.name + ".key"), Path(args.name + ".pem")
    try:
        if public.exists():
            raise keys.KeyFileError(f"{public} already exists; move it away or choose another name")
        key = keys.generate(args.algorithm)
        keys.write_private(key, private)
        keys.write_public(key, public)
    except FirmwareError as exc:
        return _fail(exc)
    print(f"{keys.key_id(key)}  {args.algorithm}  private: {private} (mode 0600)  public: {public}")
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        trusted = keys.load_trusted(Path(args.dir))
    except FirmwareError as exc:
        return _fail(exc)
    if not trusted:
        print(f"no trusted keys in {args.dir}", file=sys.stderr)
        return 1
    for kid, key in trusted.items():
        print(f"{kid}  {key.algorithm}  {key.path}")
    return 0
