"""`roost bundle`: build, sign, verify and inspect signed firmware bundles (docs/bundle-format.md).

    roost bundle create IMAGE -o OUT --version V --compatible BOARD --security-version N [--key KEY ...]
    roost bundle sign BUNDLE --key KEY                      sign in place (the payload is not rewritten)
    roost bundle sign --manifest M.json --key KEY -o M.sig  sign on another machine, from the manifest alone
    roost bundle sign BUNDLE --signature M.sig              attach a detached signature
    roost bundle verify BUNDLE [--keys DIR] [--board B]     signatures, policy and every block
    roost bundle inspect BUNDLE [--json] [--manifest-out M.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware import bundle, keys
from firmware.errors import BundleFormatError, FirmwareError, PayloadError, PolicyError
from firmware.manifest import DEFAULT_BLOCK_SIZE, format_time, parse_time
from firmware.source import FileSource


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bundle", help="create, sign, verify and inspect firmware bundles",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bundle_command", metavar="BUNDLE_COMMAND")

    create = sub.add_parser("create", help="build a bundle from a raw image")
    create.add_argument("image", type=Path)
    create.add_argument("-o", "--output", type=Path, required=True)
    create.add_argument("--version", required=True, help="human version string, e.g. 2026.11.1")
    create.add_argument("--compatible", action="append", required=True, metavar="BOARD",
                        help="board name this image is for (repeatable), e.g. rpi-4b")
    create.add_argument("--security-version", type=int, required=True,
                        help="monotonic counter; devices refuse anything below the highest they committed")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires", help="UTC expiry, e.g. 2027-01-31T00:00:00Z")
    expiry.add_argument("--expires-in-days", type=int, default=90, help="default: 90")
    create.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, help="default: 65536")
    create.add_argument("--golden", action="store_true", help="a golden (recovery) image for the golden slot")
    create.add_argument("--description", default="")
    create.add_argument("--key", action="append", default=[], type=Path, help="private key to sign with (repeatable)")
    create.set_defaults(func=_guarded(_create))

    sign = sub.add_parser("sign", help="sign a bundle, or a manifest on another machine")
    sign.add_argument("bundle", nargs="?", type=Path)
    sign.add_argument("--key", action="append", default=[], type=Path, help="private key (repeatable)")
    sign.add_argument("--manifest", type=Path, help="sign this exported manifest instead of a bundle")
    sign.add_argument("--signature", action="append", default=[], type=Path, help="attach a detached signature")
    sign.add_argument("-o", "--output", type=Path, help="where --manifest writes the detached signature")
    sign.set_defaults(func=_guarded(_sign))

    verify = sub.add_parser("verify", help="check signatures, policy and every block of a bundle")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--keys", type=Path, default=Path("/etc/roost/keys"), help="trusted key directory")
    verify.add_argument("--threshold", type=int, default=1, help="distinct trusted signatures required")
    verify.add_argument("--board", help="also check that the bundle is compatible with this board")
    verify.set_defaults(func=_guarded(_verify))

    inspect = sub.add_parser("inspect", help="show a bundle's manifest and signatures (does not verify)")
    inspect.add_argument("bundle", type=Path)
    inspect.add_argument("--json", action="store_true")
    inspect.add_argument("--manifest-out", type=Path, help="write the exact signed manifest bytes here")
    inspect.set_defaults(func=_guarded(_inspect))
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _fail(exc: FirmwareError) -> int:
    print(f"roost bundle: error: {exc}", file=sys.stderr)
    return exc.exit_code


def _guarded(command):
    """File system errors (unwritable output, unreadable image) become a message, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except OSError as exc:
            return _fail(FirmwareError(f"{exc.filename or ''}: {exc.strerror or exc}"))

    return run


def _create(args: argparse.Namespace) -> int:
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        expires = parse_time(args.expires, "expires") if args.expires else now + timedelta(days=args.expires_in_days)
        signers = [keys.load_private(p) for p in args.key]
        if not args.image.is_file():
            raise BundleFormatError(f"image {args.image} does not exist")
        manifest = bundle.build_manifest(args.image, compatible=args.compatible, version=args.version,
                                         security_version=args.security_version, expires=expires,
                                         block_size=args.block_size, golden=args.golden, created=now,
                                         description=args.description)
        envelope = bundle.write_bundle(args.image, manifest, args.output, signers)
    except FirmwareError as exc:
        return _fail(exc)
    state = f"signed by {', '.join(s.key_id for s in envelope.signatures)}" if envelope.signatures else \
        "UNSIGNED: sign it with `roost bundle sign` before devices will accept it"
    print(f"{args.output}: {manifest.version} for {', '.join(manifest.compatible)}, {manifest.image_size} bytes, "
          f"{manifest.block_count} blocks, expires {format_time(manifest.expires)}; {state}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    try:
        if args.manifest:
            if args.bundle or args.signature or len(args.key) != 1 or not args.output:
                raise FirmwareError("signing a manifest takes exactly: --manifest M.json --key KEY -o M.sig")
            raw = args.manifest.read_bytes()
            key = keys.load_private(args.key[0])
            from firmware.manifest import Manifest
            Manifest.from_json(raw)   # refuse to sign something a device would not parse
            args.output.write_bytes(bundle.signature_file(bundle.sign_manifest(raw, key), raw))
            print(f"{args.output}: signature by {keys.key_id(key)} over manifest "
                  f"{hashlib.sha256(raw).hexdigest()[:16]}; attach it with `roost bundle sign BUNDLE --signature`")
            return 0
        if not args.bundle or not (args.key or args.signature):
            raise FirmwareError("give a BUNDLE and at least one --key or --signature (or --manifest for offline use)")
        envelope = bundle.read_bundle_envelope(args.bundle)
        new = [bundle.sign_manifest(envelope.manifest_raw, keys.load_private(p)) for p in args.key]
        new += [bundle.read_signature_file(p.read_bytes(), envelope.manifest_raw) for p in args.signature]
        envelope = bundle.add_signatures(args.bundle, new)
    except OSError as exc:
        return _fail(FirmwareError(f"{exc.filename}: {exc.strerror}"))
    except FirmwareError as exc:
        return _fail(exc)
    print(f"{args.bundle}: signed by {', '.join(s.key_id for s in envelope.signatures)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        trusted = keys.load_trusted(args.keys)
        source = FileSource(args.bundle)
        try:
            envelope = bundle.read_envelope(source.read_at)
            manifest = bundle.verify_envelope(envelope, trusted, args.threshold)
            if args.board and args.board not in manifest.compatible:
                raise PolicyError(f"bundle is for {', '.join(manifest.compatible)}, not {args.board}")
            if manifest.expires <= datetime.now(UTC):
                raise PolicyError(f"bundle expired at {format_time(manifest.expires)}; re-sign it with a later expiry")
            expected = envelope.payload_offset + manifest.image_size
            if source.total_size != expected:
                raise PayloadError(f"bundle is {source.total_size} bytes, its manifest accounts for {expected}")
            for index, block in enumerate(source.blocks(envelope.payload_offset, manifest.image_size,
                                                        manifest.block_size)):
                if hashlib.sha256(block).digest() != manifest.digest(index):
                    raise PayloadError(f"block {index} does not match the signed manifest (tampered or mixed bundle)")
        finally:
            source.close()
    except FirmwareError as exc:
        return _fail(exc)
    print(f"{args.bundle}: OK, {manifest.version}, {manifest.block_count} blocks verified")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    try:
        envelope = bundle.read_bundle_envelope(args.bundle)
        from firmware.manifest import Manifest
        manifest = Manifest.from_json(envelope.manifest_raw)
    except FirmwareError as exc:
        return _fail(exc)
    if args.manifest_out:
        args.manifest_out.write_bytes(envelope.manifest_raw)
    doc = manifest.summary() | {
        "manifest_id": envelope.manifest_id, "payload_offset": envelope.payload_offset,
        "signatures": [{"keyid": s.key_id, "alg": s.algorithm} for s in envelope.signatures],
        "verified": False,
    }
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        for key, value in doc.items():
            print(f"{key:17} {value}")
        print("(inspect does not check signatures; use `roost bundle verify`)")
    return 0
