"""Build hook for the protocol package's C fast paths (everything else is in pyproject.toml).

protocol/_msgpack_c.c holds canonical msgpack packing (protocol/canonical.py) and the strict
decoding of plain documents (protocol/_msgpack.py). It is optional: where no C compiler is found
the install goes on without it and those modules run their pure-Python paths, which give the same
bytes and values.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("protocol._msgpack_c", ["protocol/_msgpack_c.c"], optional=True)])
