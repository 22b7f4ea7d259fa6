"""Cluster mode (SPEC section 15): a region's processes share one journal on a Redis Cluster.

`store` (the region's keys and scripts), `lease` (one leadership term), `serials` (standbys'
refusal serials), `keyseal` (rotated signing keys sealed for the journal), `node` (the standby /
leader cycle) and `gateway` (the composition). The journal side of the port is
gateway/journal/stream.py. See docs/cluster.md.
"""
