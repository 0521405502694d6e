"""``muse_report``: the session report of a session folder, after the graph has stopped.

Reads the closed bag and the stitched WAV (:mod:`muse_bringup.session_data`), computes
metrics.json (:mod:`muse_bringup.metrics`) and draws timeline.png
(:mod:`muse_bringup.timeline`). The runner calls :func:`write_report` once the graph is down;
the launch file runs ``muse_report FOLDER`` when the lifecycle manager exits; it also runs
offline on a copied session folder.
"""

import argparse
import json
import sys
from pathlib import Path

from muse_bringup.metrics import compute_metrics
from muse_bringup.session import SessionPaths
from muse_bringup.session_data import load_session, read_wav
from muse_bringup.timeline import draw_timeline


def write_report(session):
    """Compute the metrics and draw the timeline of a session folder; return summary lines."""
    session = session if isinstance(session, SessionPaths) else SessionPaths(Path(session))
    if not session.bag.exists():
        raise FileNotFoundError(f'no session bag at {session.bag}')
    data = load_session(session.bag)
    wav = read_wav(session.wav)
    metrics = compute_metrics(data, wav)
    session.metrics_json.write_text(json.dumps(metrics, indent=2) + '\n')
    draw_timeline(data, metrics, wav, session.timeline_png)
    return metrics['summary']


def main(argv=None):
    parser = argparse.ArgumentParser(prog='muse_report', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('session', help='session folder (holding session_bag/ and session.wav)')
    args = parser.parse_args(argv)
    try:
        for line in write_report(Path(args.session)):
            print(line)
    except FileNotFoundError as exc:
        print(f'muse_report: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
