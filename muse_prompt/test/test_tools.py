"""The preset checker and the tempo-map drawing, as a user runs them."""

import subprocess
import sys

from muse_common.activities import ACTIVITY_NAMES


def run(*args):
    return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True,
                          timeout=120)


def test_preview_prints_every_activity_of_a_user_preset(tmp_path):
    path = tmp_path / 'mine.yaml'
    path.write_text('presets:\n  bebop: {extends: jazz, genre: Bebop}\n')
    result = run('muse_prompt.preview', '--presets-file', str(path), '--style', 'bebop',
                 '--heart-rate', '100', '--age', '34', '--height-cm', '182', '--weight-kg', '78')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f'== bebop ({path})')
    texts = [line.strip() for line in lines[2::2]]
    assert len(texts) == len(ACTIVITY_NAMES)
    assert texts[ACTIVITY_NAMES.index('walking')].startswith(
        'Bebop music. Mood: relaxed and sophisticated.')
    assert 'walking       112 BPM  energy 0.55' in result.stdout


def test_preview_refuses_a_bad_file_with_status_2(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text('presets:\n  bebop: {extends: jazz, genre: 42}\n')
    result = run('muse_prompt.preview', '--presets-file', str(path))
    assert result.returncode == 2
    assert f"presets file '{path}': presets.bebop.genre: expected a non-empty string" in \
        result.stderr


def test_plots_draws_the_tempo_map(tmp_path):
    out = tmp_path / 'tempo_map.png'
    result = run('muse_prompt.plots', str(out), '--age', '34')
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and out.stat().st_size > 20_000
