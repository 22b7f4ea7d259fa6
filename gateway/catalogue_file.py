"""Reading the catalogue file named by gateway.toml `[paths] catalogue` (SPEC section 13 "Data").

The parsing and the index are the core's (gateway/core/catalogue.py, pure); this module only reads
the bytes, with a size bound, and hands them over.
"""

from __future__ import annotations

import pathlib

from gateway.core.catalogue import Catalogue, CatalogueError, parse_catalogue
from gateway.files import load_data_file

__all__ = ["CATALOGUE_FILE_BYTES_MAX", "load_catalogue"]

# CATALOGUE_ROWS_MAX rows of ~120 bytes (a national code, a Chinese name with its specification,
# two dates) with ample room for longer names: the bound only stops a wrong file early.
CATALOGUE_FILE_BYTES_MAX = 128 * 1024 * 1024


def load_catalogue(path: str | pathlib.Path) -> Catalogue:
    """Read and parse a catalogue CSV file.

    Args:
        path: the file.
    Returns:
        the Catalogue, with no changes applied.
    Raises:
        CatalogueError: one line naming the file and, where there is one, the line and the field.
    """
    return load_data_file(path, CATALOGUE_FILE_BYTES_MAX, "CATALOGUE_FILE_BYTES_MAX", CatalogueError,
                          parse_catalogue)
