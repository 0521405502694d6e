"""Placeholder runner: replaced by the full graph runner (issue 7)."""

import sys


def main():
    from muse_msgs import msg
    names = [n for n in dir(msg) if n[0].isupper()]
    print('MUSE workspace is built; muse_msgs types:', ', '.join(names))
    print('The node graph is not assembled yet.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
