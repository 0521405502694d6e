import sys
from pathlib import Path

# The client tests run against the real server with the test backends of muse_server/test.
SERVER_TEST_DIR = Path(__file__).resolve().parents[2] / 'muse_server' / 'test'
sys.path.insert(0, str(SERVER_TEST_DIR))
