"""Running the whole MUSE graph from a test, and reading back what the session recorded."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / 'launch' / 'config' / 'muse.yaml'


def params_file_with(tmp_path, changes):
    """muse.yaml with {node: {parameter: value}} changed, written under tmp_path."""
    document = yaml.safe_load(PARAMS_FILE.read_text())
    for node, values in changes.items():
        document[f'/**/{node}']['ros__parameters'].update(values)
    path = tmp_path / 'muse_test.yaml'
    path.write_text(yaml.safe_dump(document))
    return path


def runner_command(out_dir, *args):
    return [sys.executable, '-m', 'muse_bringup.run', '--output-dir', str(out_dir), '--sink',
            'null', '--quiet', *map(str, args)]


def runner_env(**extra):
    """The test's environment without its ROS_DOMAIN_ID: the runner takes a free domain of its
    own (or the one given with --domain-id), as for a user."""
    env = {k: v for k, v in os.environ.items() if k != 'ROS_DOMAIN_ID'}
    return {**env, **extra}


def session_of(out_dir):
    sessions = sorted(Path(out_dir).glob('session-*'))
    return sessions[-1] if sessions else None


def session_logs(session, lines=15):
    """The last lines of every log of a session folder, for assertion messages."""
    text = ''
    for log in sorted((session / 'logs').glob('*.log')) if session else ():
        text += f'\n----- {log.name} (last lines)\n' + '\n'.join(
            log.read_text(errors='replace').splitlines()[-lines:])
    return text


def run_graph(tmp_path, *args, timeout=600):
    """Run ``muse_run`` to the end of its replay; return (exit code, session folder, output)."""
    out_dir = tmp_path / 'sessions'
    result = subprocess.run(
        runner_command(out_dir, *args), env=runner_env(), capture_output=True, text=True,
        timeout=timeout, cwd=REPO_ROOT)
    session = session_of(out_dir)
    return result.returncode, session, result.stdout + result.stderr + session_logs(session)
