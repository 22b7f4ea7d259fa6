"""The region's TOML files read from disk: the only place the gateway opens registry.toml and secrets.toml.

The core validates their contents (`parse_registry`, `parse_secrets`) and never touches a file.
"""

from __future__ import annotations

import tomllib
from typing import Any

from gateway.core import Registry, RegistryError, Secrets, parse_registry, parse_secrets

__all__ = ["load_registry", "load_secrets", "read_toml"]


def read_toml(path: str) -> dict[str, Any]:
    """The parsed TOML document at `path`; raises RegistryError (one line naming the file)."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None


def load_registry(path: str) -> Registry:
    """Read and validate `registry.toml`; raises RegistryError (one line) on any problem."""
    return parse_registry(read_toml(path), path)


def load_secrets(path: str) -> Secrets:
    """Read and validate `secrets.toml`; raises RegistryError (one line) on any problem."""
    return parse_secrets(read_toml(path), path)
