"""Make ``import muse_prompt`` mean the installed package inside these tests.

pytest's importlib import mode names this folder's files ``muse_prompt.test.<file>`` and, to
do so, registers the source folder ``muse_prompt/`` as a namespace package called
``muse_prompt``, which hides the real package (``muse_prompt/muse_prompt``); the same happens
to ``muse_sensors`` when its tests were collected first. Swap such stand-ins for the real
packages before any test module imports them. (A fix for every package belongs in the root
conftest.py; see the muse_prompt report.)
"""

import importlib
import sys

for _name in ('muse_prompt', 'muse_sensors'):
    _module = sys.modules.get(_name)
    if _module is not None and getattr(_module, '__file__', None) is None:
        del sys.modules[_name]
        importlib.import_module(_name)
