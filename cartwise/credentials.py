"""What the API's server side (grpc_api/security.py) and client side (cartwise/client.py) share: the error for
security settings that cannot be used, and reading the PEM files those settings name."""

from __future__ import annotations

from pathlib import Path


class SecurityConfigError(ValueError):
    """Security settings that cannot serve: half a key pair, an unreadable file, an open non-loopback port."""


def read_pem(path: Path) -> bytes:
    """The bytes of a PEM file. Raises SecurityConfigError naming the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise SecurityConfigError(f"cannot read {path}: {err.strerror}") from None
