"""muse_common.crosstalk: what tells another graph on the same domain from this one."""

from muse_common.crosstalk import OrderWatch, evidence

CLEAN = dict(imu_recorded=19200, imu_announced=19200, profiles_recorded=1, profiles_announced=1,
             user_ids={'S1'}, prompt_id_regressions=0, fragment_repeats=0,
             counter_regressions=0, max_publishers={'/muse/imu': 1})


def test_order_watch_counts_regressions_and_repeats():
    watch = OrderWatch('prompt_id')
    assert [watch.observe(k) for k in (1, 2, 2, 4, 1, 2)] == \
        ['ok', 'ok', 'repeat', 'ok', 'regression', 'ok']
    assert (watch.regressions, watch.repeats, watch.suspicious) == (1, 1, True)
    assert watch.last_regression == 'prompt_id went back from 4 to 1'


def test_a_clean_session_has_no_evidence_and_fewer_recorded_than_sent_is_not_foreign():
    assert evidence(**CLEAN) == []
    assert evidence(**{**CLEAN, 'imu_recorded': 19000}) == []   # best effort loses some
    assert evidence(**{**CLEAN, 'imu_announced': None}) == []   # no announcement: no verdict


def test_the_reported_merge_is_flagged_on_every_count():
    found = evidence(imu_recorded=20865, imu_announced=19200, profiles_recorded=2,
                     profiles_announced=1, user_ids={'S1', 'S2'}, prompt_id_regressions=5,
                     fragment_repeats=296, counter_regressions=3,
                     max_publishers={'/muse/imu': 2, '/muse/heart_rate': 1},
                     bridge_prompt_regressions=5, imu_stamp_regressions=368)
    text = '\n'.join(found)
    for needle in ('20865 IMU messages recorded but the replay published 19200',
                   '2 user profiles', '2 listeners', 'prompt ids went back 5 times',
                   'bridge saw prompt ids go back 5', '296 audio fragments',
                   'counters went back 3', '2 publishers on /muse/imu',
                   'IMU stamps went back 368 times'):
        assert needle in text, text
    assert '/muse/heart_rate' not in text
