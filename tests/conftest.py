import sys
from pathlib import Path

# Helpers shared by the integration tests live beside them.
sys.path.insert(0, str(Path(__file__).resolve().parent))
