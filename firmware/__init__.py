"""Signed A/B firmware updates: bundles, verify-before-write installer, boot backends, commit/rollback/golden.

The agent drives it through :class:`firmware.engine.UpdateEngine`; the `roost bundle`, `roost keys` and
`roost update` commands are thin wrappers around the same API.
"""
