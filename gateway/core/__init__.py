"""yibao-gateway package."""
