"""Running the whole MUSE graph from a test, and reading back what the session recorded."""

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


def run_graph(tmp_path, *args, timeout=600):
    """Run ``muse_run`` to the end of its replay; return (exit code, session folder, output)."""
    out_dir = tmp_path / 'sessions'
    result = subprocess.run(
        [sys.executable, '-m', 'muse_bringup.run', '--output-dir', str(out_dir), '--sink', 'null',
         '--quiet', *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    sessions = sorted(out_dir.glob('session-*')) if out_dir.exists() else []
    output = result.stdout + result.stderr
    for log in (sessions[-1] / 'logs').glob('*.log') if sessions else ():
        output += f'\n----- {log.name} (last lines)\n' + '\n'.join(
            log.read_text(errors='replace').splitlines()[-15:])
    return result.returncode, (sessions[-1] if sessions else None), output
