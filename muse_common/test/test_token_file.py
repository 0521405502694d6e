"""muse_common.token_file: a token file must be readable by its owner only."""

import pytest
from muse_common.token_file import check_private


def test_owner_only_passes_and_an_empty_path_means_no_file(tmp_path):
    path = tmp_path / 'token'
    path.write_text('secret\n')
    path.chmod(0o600)
    check_private(str(path))
    check_private('')


@pytest.mark.parametrize('mode', [0o640, 0o604, 0o666])
def test_a_file_others_can_read_is_refused_naming_the_fix(tmp_path, mode):
    path = tmp_path / 'token'
    path.write_text('secret\n')
    path.chmod(mode)
    with pytest.raises(ValueError, match='chmod 600') as error:
        check_private(str(path))
    assert 'secret' not in str(error.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match='missing'):
        check_private(str(tmp_path / 'missing'))
