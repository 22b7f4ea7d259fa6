"""Reading the accounts file named by gateway.toml `[paths] accounts` (SPEC section 13 "Data").

The parsing and the balances are the core's (gateway/core/accounts.py, pure); this module only
reads the bytes, with a size bound, and hands them over.
"""

from __future__ import annotations

import pathlib

from gateway.core.accounts import ACCOUNTS_ROWS_MAX, AccountsError, OpeningBalances, parse_accounts
from gateway.files import load_data_file

__all__ = ["ACCOUNTS_FILE_BYTES_MAX", "load_accounts"]

# ACCOUNTS_ROWS_MAX rows of a 64-character psn_no and an 11-digit balance: the bound only stops a
# wrong file early (a county's 500,000 rows are about 12 MB).
ACCOUNTS_FILE_BYTES_MAX = ACCOUNTS_ROWS_MAX * 80


def load_accounts(path: str | pathlib.Path) -> OpeningBalances:
    """Read and parse an accounts CSV file.

    Args:
        path: the file.
    Returns:
        the opening balances.
    Raises:
        AccountsError: one line naming the file and, where there is one, the line and the field.
    """
    return load_data_file(path, ACCOUNTS_FILE_BYTES_MAX, "ACCOUNTS_FILE_BYTES_MAX", AccountsError, parse_accounts)
