"""Errors raised by the update machinery. Each carries a message that says what to do and a CLI exit code."""

from __future__ import annotations


class FirmwareError(Exception):
    """Base class: ``str(err)`` is the user-facing message, ``exit_code`` what `roost` returns for it."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BundleFormatError(FirmwareError):
    """The file is not a well-formed roost bundle (bad magic, truncated header, oversized manifest, bad JSON)."""

    exit_code = 10


class SignatureError(FirmwareError):
    """The manifest is unsigned, signed by an unknown key, or a signature does not verify."""

    exit_code = 11


class PolicyError(FirmwareError):
    """A well-signed bundle that this device must not install: other board, downgrade, expired, too large."""

    exit_code = 12


class PayloadError(FirmwareError):
    """The payload does not match the signed manifest (tampered block, truncated, extended)."""

    exit_code = 13


class DownloadError(FirmwareError):
    """Fetching a bundle over HTTP failed (timeout, byte cap, server ignoring Range, bad status)."""

    exit_code = 14


class SlotError(FirmwareError):
    """The target slot cannot take the image (too small, read-only, disk full, missing)."""

    exit_code = 15


class BootError(FirmwareError):
    """The boot selector could not be read or written (autoboot.txt, U-Boot environment, device tree)."""

    exit_code = 16


class StateError(FirmwareError):
    """The requested operation does not fit the current update state (e.g. mark-good with no trial pending)."""

    exit_code = 17


class KeyFileError(FirmwareError):
    """A key file is missing, unreadable, of an unsupported type, or would be overwritten."""

    exit_code = 18
