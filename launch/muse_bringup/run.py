"""``python -m muse_bringup.run``: the runner, for environments without console scripts on PATH."""

import sys

from muse_bringup.runner import main

if __name__ == '__main__':
    sys.exit(main())
