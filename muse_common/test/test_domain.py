"""muse_common.domain: a free ROS domain per graph, held while its holder lives."""

import subprocess
import sys

import pytest
from muse_common import domain


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(domain.LOCK_DIR_ENV, str(tmp_path))
    return tmp_path


def test_two_claims_get_different_free_domains_and_a_release_frees_one(lock_dir):
    first = domain.claim_domain(env={})
    second = domain.claim_domain(env={})
    assert first.chosen and second.chosen
    assert first.domain_id != second.domain_id
    assert first.env() == {'ROS_DOMAIN_ID': str(first.domain_id)}
    first.release()
    third = domain.claim_domain(env={})
    assert third.domain_id == first.domain_id
    second.release()
    third.release()


def test_a_domain_held_by_another_process_is_skipped_until_that_process_exits(lock_dir):
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys; from muse_common.domain import claim_domain; '
         'lease = claim_domain(env={}); print(lease.domain_id, flush=True); sys.stdin.read()'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={'MUSE_DOMAIN_LOCK_DIR': str(lock_dir), 'PATH': '/usr/bin:/bin',
             **{k: v for k, v in __import__('os').environ.items() if k.startswith('PYTHON')}})
    try:
        held = int(holder.stdout.readline())
        mine = domain.claim_domain(env={})
        assert mine.domain_id != held
        given = domain.claim_domain(given=held, env={})
        assert not given.chosen and given.domain_id == held
        assert given.shared_with == f'pid {holder.pid}'
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    again = domain.claim_domain(given=held, env={})
    assert again.shared_with == ''      # the holder exited: the kernel released its lock
    for lease in (mine, given, again):
        lease.release()


def test_a_user_set_ros_domain_id_is_used_as_given(lock_dir):
    lease = domain.claim_domain(env={'ROS_DOMAIN_ID': '42'})
    assert (lease.domain_id, lease.chosen) == (42, False)
    lease.release()


@pytest.mark.parametrize('text', ['abc', '-1', '300'])
def test_a_bad_domain_id_is_refused_with_what_was_expected(lock_dir, text):
    with pytest.raises(domain.DomainError, match='ROS domain id'):
        domain.claim_domain(env={'ROS_DOMAIN_ID': text})


def test_a_child_given_the_lease_fd_keeps_the_domain_after_the_parent_lets_go(lock_dir):
    lease = domain.claim_domain(env={})
    child = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],
                             stdin=subprocess.PIPE, pass_fds=lease.fds)
    try:
        lease.release()       # the parent lets go; the orphaned node still holds the lock
        assert domain.claim_domain(given=lease.domain_id, env={}).shared_with
        assert domain.claim_domain(env={}).domain_id != lease.domain_id
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert domain.claim_domain(given=lease.domain_id, env={}).shared_with == ''
