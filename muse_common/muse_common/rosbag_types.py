"""A `rosbags` typestore that knows muse_msgs, for writing and reading MUSE bags without ROS.

The types are parsed from the installed .msg files, so bags carry the same definitions (and
type hashes) as a real ROS 2 install, and `ros2 bag play` replays them there.
"""

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def muse_typestore():
    from ament_index_python.packages import get_package_share_directory
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    msg_dir = Path(get_package_share_directory('muse_msgs')) / 'msg'
    types = {}
    for path in sorted(msg_dir.glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'muse_msgs/msg/{path.stem}'))
    if not types:
        raise FileNotFoundError(f'no muse_msgs .msg files under {msg_dir}')
    store.register(types)
    return store
