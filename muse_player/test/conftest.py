"""Test setup of muse_player.

pytest's importlib import mode names this folder's files ``muse_player.test.<file>`` and to do
so registers the source folder ``muse_player/`` as a namespace package called
``muse_player``, which hides the real package (``muse_player/muse_player``). Swap that
stand-in for the real package before a test module imports it. (A fix for every package
belongs in the root conftest.py.) The signal helpers shared by these tests live beside them.
"""

import importlib
import sys
from pathlib import Path

_module = sys.modules.get('muse_player')
if _module is not None and getattr(_module, '__file__', None) is None:
    del sys.modules['muse_player']
    importlib.import_module('muse_player')

sys.path.insert(0, str(Path(__file__).resolve().parent))
