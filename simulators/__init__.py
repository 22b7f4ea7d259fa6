"""yibao-sim: simulated POS terminals, a seeded traffic model and an independent oracle.

Talks to a gateway over HTTP only, through protocol/; it never imports gateway/.
"""
