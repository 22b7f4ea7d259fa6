"""The region's TOML files read from disk: the only place the gateway opens registry.toml and secrets.toml.

The core validates their contents (`parse_registry`, `parse_secrets`) and never touches a file.
"""

from __future__ import annotations

import pathlib
import tomllib
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.core import Registry, RegistryError, Secrets, parse_registry, parse_secrets

__all__ = ["load_data_file", "load_registry", "load_secrets", "read_toml"]

T = TypeVar("T")


def load_data_file(path: str | pathlib.Path, bytes_max: int, limit_name: str,
                   error: Callable[[str, int | None, str | None, str], Exception],
                   parse: Callable[[bytes, str], T]) -> T:
    """Read a data file of at most `bytes_max` bytes (the CSV files of SPEC 13) and parse it.

    Args:
        path: the file; `limit_name` names the bound in the error.
        error: the file format's error type, built as error(file, line, field, problem).
        parse: the core's pure parser, parse(data, file name).
    Raises:
        whatever `error` builds: unreadable, too large, or refused by `parse`.
    """
    file = pathlib.Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(bytes_max + 1)
    except OSError as exc:
        raise error(str(file), None, None, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > bytes_max:
        raise error(str(file), None, None, f"larger than {bytes_max} bytes ({limit_name})")
    return parse(data, str(file))


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
