"""`roost tpm`: what an operator needs from the TPM to enroll the device and to check on it.

    roost tpm info [--json]           manufacturer, firmware, PCR banks, dictionary-attack lockout, handles
    roost tpm ek [--create] [--json]  the EK public key (base64 TPM2B_PUBLIC) and the DPS registration id
    roost tpm attest [--json]         health attestation now (quote over the boot PCRs, verdict from the service)

The TPM is the one in the config (identity.tpm_tcti), or --tcti.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

from agent.identity.errors import IdentityError

DEFAULT_TCTI = "device:/dev/tpmrm0"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("tpm", help="TPM status, endorsement key, health attestation",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="tpm_command", metavar="TPM_COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tcti", help="TPM transport, e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321 "
                                      "(default: identity.tpm_tcti from the config)")
        p.add_argument("--config", help="config file (default: $ROOST_CONFIG or /etc/roost/roost.toml)")
        p.add_argument("--json", action="store_true", help="print JSON")

    info = sub.add_parser("info", help="manufacturer, firmware, PCR banks, lockout state")
    common(info)
    info.set_defaults(func=_info)

    ek = sub.add_parser("ek", help="endorsement key and DPS registration id, for the enrollment")
    common(ek)
    ek.add_argument("--create", action="store_true",
                    help="create and persist the TCG default EK at 0x81010001 if the TPM has none")
    ek.set_defaults(func=_ek)

    attest = sub.add_parser("attest", help="health attestation: quote the boot PCRs to the attestation service")
    common(attest)
    attest.add_argument("--url", required=True, help="attestation service URL, e.g. https://host:port")
    attest.add_argument("--ca-file", help="PEM root CA of the attestation service (default: system trust)")
    attest.set_defaults(func=_attest)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _tcti(args: argparse.Namespace) -> str:
    if args.tcti:
        return args.tcti
    from agent.config import ConfigError, default_path, load_config

    path = default_path(args.config)
    if not args.config and not path.exists():
        return DEFAULT_TCTI
    try:
        return load_config(path).identity.tpm_tcti
    except ConfigError as exc:
        raise IdentityError(f"cannot read the TPM settings: {exc}", "fix the config or pass --tcti") from None


def _fail(args: argparse.Namespace, error: IdentityError) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": error.problem, "fix": error.fix, "kind": error.kind}))
    else:
        print(f"roost tpm: {error.problem}", file=sys.stderr)
        if error.fix:
            print(f"  fix: {error.fix}", file=sys.stderr)
    return 1


def _info(args: argparse.Namespace) -> int:
    from agent.tpm.device import Tpm

    try:
        with Tpm(_tcti(args)) as tpm:
            info = tpm.info()
    except IdentityError as exc:
        return _fail(args, exc)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    lock = info["lockout"]
    state = "LOCKED OUT" if lock["in_lockout"] else "not locked"
    handles = ", ".join(f"{name} {'yes' if there else 'no'}" for name, there in info["roost_handles"].items())
    print(f"TPM            {info['manufacturer']} ({info['vendor']}) via {info['tcti']}")
    print(f"firmware       {info['firmware']}")
    print(f"specification  {info['spec']}")
    print(f"PCR banks      {', '.join(info['pcr_banks']) or 'none'}")
    print(f"lockout        {state}: {lock['failed_tries']} of {lock['max_tries']} failed tries, "
          f"one forgiven every {lock['recovery_interval_s']} s")
    print(f"roost handles  {handles}")
    print(f"persistent     {' '.join(info['persistent_handles']) or 'none'}")
    return 0


def _ek(args: argparse.Namespace) -> int:
    from agent.tpm.device import EK_HANDLE, Tpm, registration_id

    try:
        with Tpm(_tcti(args)) as tpm:
            ek = tpm.create_ek() if args.create else tpm.ek_public()
            cert = tpm.ek_certificate()
    except IdentityError as exc:
        return _fail(args, exc)
    doc = {"endorsement_key": base64.b64encode(ek).decode(), "registration_id": registration_id(ek),
           "handle": f"0x{EK_HANDLE:08x}", "ek_certificate": base64.b64encode(cert).decode() if cert else None}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"registration id  {doc['registration_id']}")
    print(f"endorsement key  {doc['endorsement_key']}")
    print(f"EK certificate   {'in NV 0x01c00002' if cert else 'none'}")
    print("Create a DPS individual enrollment with attestation type TPM, this endorsement key and registration id:")
    print(f"  az iot dps enrollment create -g GROUP --dps-name DPS --enrollment-id {doc['registration_id']} "
          f"--attestation-type tpm --endorsement-key {doc['endorsement_key']}")
    return 0


def _attest(args: argparse.Namespace) -> int:
    from agent.tpm.health import attest

    ca_pem = None
    try:
        if args.ca_file:
            from agent.identity.secure_files import read_text

            ca_pem = read_text(args.ca_file, "--ca-file", "point it at the attestation service's PEM root CA")
        verdict = attest(_tcti(args), args.url, ca_pem=ca_pem)
    except IdentityError as exc:
        return _fail(args, exc)
    if args.json:
        print(json.dumps(verdict, indent=2))
    else:
        print(f"health verdict  {verdict.get('verdict')}")
        for reason in verdict.get("reasons", []):
            print(f"  {reason}")
    return 0 if verdict.get("verdict") == "healthy" else 1
