"""The deterministic business core of yibao-gateway: registry, ledgers, settlement, idempotency.

Pure: no trio, no sockets, no clock (time is a parameter), no keys, no prometheus, no journal.
`Core.decide` answers a request with a Decision; `Core.commit` applies a typed record (records.py).
"""

from gateway.core.config import CoreConfig, Decision, TxFacts
from gateway.core.governance import AdminRefusal, FieldError
from gateway.core.keys import PublishedKeys
from gateway.core.ledger import Grant, InMemoryLedger, LedgerPort
from gateway.core.machine import Core
from gateway.core.overlay import CHANGE_KINDS
from gateway.core.records import RECORD_TYPES, Record, from_wire
from gateway.core.registry import (
    Registry, RegistryError, Secrets, parse_registry, parse_secrets,
)

__all__ = [
    "AdminRefusal", "CHANGE_KINDS", "Core", "CoreConfig", "Decision", "FieldError", "Grant", "InMemoryLedger",
    "LedgerPort", "PublishedKeys", "RECORD_TYPES", "Record", "Registry", "RegistryError", "Secrets", "TxFacts",
    "from_wire", "parse_registry", "parse_secrets",
]
