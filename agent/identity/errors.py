"""Identity errors: each one says what is wrong and what to do about it."""

from __future__ import annotations


class IdentityError(Exception):
    """Provisioning or connection set-up failed; ``fix`` tells the operator what to change."""

    def __init__(self, problem: str, fix: str = "", *, kind: str = "identity") -> None:
        self.problem = problem
        self.fix = fix
        self.kind = kind
        super().__init__(f"{problem}. {fix}" if fix else problem)


class ConfigurationError(IdentityError):
    """The identity or hub section of the configuration cannot work as written."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem, fix, kind="configuration")


class ProvisioningError(IdentityError):
    """DPS refused or could not complete the registration."""

    def __init__(self, problem: str, fix: str = "", *, kind: str = "provisioning") -> None:
        super().__init__(problem, fix, kind=kind)


class TrustError(IdentityError):
    """A TLS peer could not be trusted: wrong CA, hostname mismatch, expired certificate."""

    def __init__(self, problem: str, fix: str = "", *, kind: str = "trust") -> None:
        super().__init__(problem, fix, kind=kind)
