import importlib
import sys
from pathlib import Path

# Test-only backends (bridge_test_backends) live beside the tests; servers started as separate
# processes get this directory on PYTHONPATH (bridge_test_support.server_env).
TEST_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TEST_DIR))

# pytest's importlib mode names this file muse_cloud_bridge.test.conftest and, to do so,
# registers the repository folder muse_cloud_bridge/ (no __init__.py) as a namespace package
# called muse_cloud_bridge, hiding the real one. Put the real package back.
_registered = sys.modules.get('muse_cloud_bridge')
if _registered is not None and getattr(_registered, '__file__', None) is None:
    del sys.modules['muse_cloud_bridge']
    importlib.import_module('muse_cloud_bridge')
