"""The rule for a token file: readable by its owner only, as ssh's private keys.

The server token reaches the bridge (and the runner's local server) only through the
environment (``$MUSE_SERVER_TOKEN``) or such a file, never through a ROS parameter, a command
line, a launch default, a log line or a temporary file: parameters can be read by anyone on the
ROS domain, command lines by anyone on the host (``ps``). Plain module (no rclpy).
"""

import os
import stat


def check_private(path):
    """Raise ValueError naming ``path`` when it is given but group/other can read or write it
    (or it is not a regular file). An empty path passes: there is no file to check."""
    if not path:
        return
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ValueError(f'token file {path}: cannot read it ({exc.strerror})') from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f'token file {path} is not a regular file')
    if info.st_mode & 0o077:
        raise ValueError(f'token file {path} is readable by others (mode '
                         f'{stat.S_IMODE(info.st_mode):04o}); expected mode 0600: '
                         f'chmod 600 {path}')
