"""The sans-IO wire contract of yibao-gateway: frames, envelopes, inputs, credentials, error codes."""

from protocol.errors import ErrCode, ProtocolError

__all__ = ["ErrCode", "ProtocolError"]
