import sys
from pathlib import Path

# The signal helpers shared by this package's tests live beside them.
sys.path.insert(0, str(Path(__file__).resolve().parent))
