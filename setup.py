"""Build hook for the one compiled module: protocol/_canonical_c.c (canonical msgpack in C).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is found
the install goes on without it and protocol/canonical.py runs its pure-Python path (same bytes).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("protocol._canonical_c", ["protocol/_canonical_c.c"], optional=True)])
