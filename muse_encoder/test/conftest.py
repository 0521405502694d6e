"""Make ``import muse_encoder`` (and ``muse_sensors``) mean the installed packages here.

pytest's importlib import mode names these files ``muse_encoder.test.<file>`` and, to do so,
registers the repository folder ``muse_encoder/`` (no ``__init__.py``) as a namespace package
called ``muse_encoder``, hiding the real one (``muse_encoder/muse_encoder``); the same happens
to ``muse_sensors`` when its tests were collected first. Swap such stand-ins for the real
packages before any test module imports them. (The general fix belongs in the root
conftest.py; see the muse_encoder report.)
"""

import importlib
import sys

for _name in ('muse_encoder', 'muse_sensors'):
    _module = sys.modules.get(_name)
    if _module is not None and getattr(_module, '__file__', None) is None:
        del sys.modules[_name]
        importlib.import_module(_name)
