import sys
from pathlib import Path

# Test-only backends (server_test_backends) live beside the tests; servers started as separate
# processes get this directory on PYTHONPATH (server_test_support.server_env).
TEST_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TEST_DIR))
