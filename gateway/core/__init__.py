"""The deterministic business core of yibao-gateway: registry, ledgers, settlement, idempotency.

Pure: no trio, no sockets, no clock (time is a parameter), no prometheus, no journal.
"""

from gateway.core.config import CoreConfig, Rejection, TxFacts, TxResult
from gateway.core.keyring import KeyRing
from gateway.core.ledger import Grant, InMemoryLedger, LedgerPort
from gateway.core.machine import Core
from gateway.core.overlay import CHANGE_KINDS
from gateway.core.registry import (
    Registry, RegistryError, Secrets, load_registry, load_secrets, parse_registry, parse_secrets,
)
from gateway.core.state import RECORD_KINDS

__all__ = [
    "CHANGE_KINDS", "Core", "CoreConfig", "Grant", "InMemoryLedger", "KeyRing", "LedgerPort", "RECORD_KINDS",
    "Registry", "RegistryError", "Rejection", "Secrets", "TxFacts", "TxResult", "load_registry", "load_secrets",
    "parse_registry", "parse_secrets",
]
