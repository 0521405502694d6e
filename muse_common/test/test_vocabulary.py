"""The shared vocabulary agrees with the messages that carry it."""

import math

from muse_common import activities
from muse_common.profile import SEX_FEMALE, SEX_MALE, SEX_UNKNOWN, Profile


def test_activity_names_are_the_nine_ppg_dalia_classes():
    assert activities.ACTIVITY_NAMES[activities.TRANSIENT] == 'transient'
    assert len(activities.ACTIVITY_DISPLAY_NAMES) == activities.NUM_ACTIVITIES == 9


def test_sex_codes_are_the_user_profile_constants():
    from muse_msgs.msg import UserProfile
    assert (SEX_UNKNOWN, SEX_MALE, SEX_FEMALE) == (
        UserProfile.SEX_UNKNOWN, UserProfile.SEX_MALE, UserProfile.SEX_FEMALE)


def test_profile_round_trips_through_a_user_profile_message():
    from muse_msgs.msg import UserProfile
    profile = Profile(age=34, sex='f', height_cm=170.0, weight_kg=65.0, skin_type=2, sport=5)
    msg = UserProfile(age=profile.age, sex=profile.sex_code, height_cm=profile.height_cm,
                      weight_kg=profile.weight_kg, skin_type=profile.skin_type,
                      sport=profile.sport)
    assert Profile.from_msg(msg) == profile
    unknown = Profile.from_msg(UserProfile(sex=7, height_cm=math.nan, weight_kg=math.nan))
    assert unknown.sex == '' and unknown.sex_code == SEX_UNKNOWN


def test_prompt_reasons_are_the_music_prompt_constants():
    from muse_msgs.msg import MusicPrompt
    from muse_prompt.decision import Reason
    assert {f'REASON_{r.name}': int(r) for r in Reason} == {
        name: getattr(MusicPrompt, name) for name in dir(MusicPrompt) if name.startswith('REASON_')}
