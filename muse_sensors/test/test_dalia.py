"""The PPG-DaLiA loader: generated subjects load with the documented shapes, rates and ids;
every kind of malformed input is refused with an error naming the file and the field."""

import math
import os
import pickle

import numpy as np
import pytest

from muse_common import activities, profile
from muse_sensors import dalia, synthetic

MINUTES = 3


@pytest.fixture(scope='module')
def subject_dict():
    return synthetic.generate_subject(4, MINUTES, seed=11)


@pytest.fixture(scope='module')
def subject_path(tmp_path_factory):
    return synthetic.write_subject(tmp_path_factory.mktemp('dalia'), 4, MINUTES, seed=11)


def write(path, obj, protocol=2):
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def broken(data, *keys, value=None, delete=False):
    """A deep copy of ``data`` with data[k1][k2]... replaced (or deleted)."""
    copy = pickle.loads(pickle.dumps(data))
    target = copy
    for key in keys[:-1]:
        target = target[key]
    if delete:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return copy


def test_constants_match_the_dataset():
    assert activities.ACTIVITY_NAMES == ('transient', 'sitting', 'stairs', 'table_soccer', 'cycling',
                                    'driving', 'lunch_break', 'walking', 'working')
    assert len(activities.ACTIVITY_DISPLAY_NAMES) == activities.NUM_ACTIVITIES == 9
    assert activities.ACTIVITY_DISPLAY_NAMES[8] == 'Working at Desk'
    assert (dalia.ACC_HZ, dalia.BVP_HZ, dalia.EDA_HZ, dalia.TEMP_HZ, dalia.ACTIVITY_HZ) == (32, 64, 4, 4, 4)
    assert (dalia.HR_WINDOW_S, dalia.HR_SHIFT_S) == (8, 2)
    # S1 of the real dataset: 589568 BVP samples and 4603 labels.
    assert dalia.hr_label_count(589568) == 4603
    assert dalia.hr_label_count(511) == 0 and dalia.hr_label_count(512) == 1


def test_loads_generated_subject_with_documented_shapes_and_rates(subject_path, subject_dict):
    s = dalia.load_subject(subject_path)
    n = MINUTES * 60 * dalia.ACC_HZ
    assert s.name == 'S4' and s.path == subject_path
    assert s.acc_g.shape == (n, 3) and s.acc_g.dtype == np.float32
    assert s.bvp.shape == (2 * n,)
    assert s.eda.shape == s.temp.shape == s.activity.shape == (n // 8,)
    assert s.activity.dtype.kind == 'i'
    assert set(np.unique(s.activity)) <= set(range(9))
    assert len(s.hr_bpm) == (len(s.bvp) - 512) // 128 + 1
    assert s.duration_s == MINUTES * 60
    # ACC is converted from 1/64 g counts to g.
    raw = subject_dict['signal']['wrist']['ACC']
    np.testing.assert_allclose(s.acc_g, raw / 64.0, rtol=1e-6)
    # At rest the wrist reads about 1 g.
    assert 0.8 < np.median(np.linalg.norm(s.acc_g, axis=1)) < 1.2
    quest = subject_dict['questionnaire']
    assert s.profile.age == quest['AGE']
    assert s.profile.sex == quest['Gender'].strip()
    assert s.profile.height_cm == pytest.approx(quest['HEIGHT'])
    assert s.profile.sex_code in (profile.SEX_MALE, profile.SEX_FEMALE)


def test_activity_and_heart_rate_at_time(subject_path):
    s = dalia.load_subject(subject_path)
    # Activity: the 4 Hz label whose interval contains t.
    for k in (0, 1, 17, len(s.activity) - 1):
        assert s.activity_at(k / 4) == s.activity[k]
        assert s.activity_at(k / 4 + 0.249) == s.activity[k]
    assert s.activity_at(-5) == s.activity[0]
    assert s.activity_at(1e9) == s.activity[-1]
    # Heart rate: the label of the latest window ending at or before t (window j ends 2j+8).
    assert math.isnan(s.heart_rate_at(7.99))
    assert s.heart_rate_at(8.0) == s.hr_bpm[0]
    assert s.heart_rate_at(9.99) == s.hr_bpm[0]
    assert s.heart_rate_at(10.0) == s.hr_bpm[1]
    assert s.heart_rate_at(2 * 20 + 8 + 0.5) == s.hr_bpm[20]
    assert s.heart_rate_at(1e9) == s.hr_bpm[-1]
    assert s.hr_window_end_s(3) == 14


def test_find_subjects_accepts_dataset_and_flat_layouts(tmp_path):
    for i in (10, 2):
        synthetic.write_subject(tmp_path, i, 0.5, seed=1, chest=False)
    (tmp_path / 'S3.pkl').write_bytes((tmp_path / 'S2' / 'S2.pkl').read_bytes())
    (tmp_path / 'notes').mkdir()
    (tmp_path / 'notes' / 'other.pkl').write_bytes(b'x')   # not S<i>/S<i>.pkl: ignored
    found = dalia.find_subjects(tmp_path)
    assert [p.stem for p in found] == ['S2', 'S3', 'S10']
    with pytest.raises(FileNotFoundError, match='no such folder'):
        dalia.find_subjects(tmp_path / 'missing')


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere.pkl'):
        dalia.load_subject(tmp_path / 'nothere.pkl')


def expect_error(path, field, words):
    with pytest.raises(dalia.DaliaFormatError) as info:
        dalia.load_subject(path)
    message = str(info.value)
    assert str(path) in message
    assert info.value.path == path
    assert info.value.field == field
    if field:
        assert f"'{field}'" in message
    assert words in message, message
    return info.value


def test_not_a_pickle(tmp_path):
    path = tmp_path / 'S1.pkl'
    path.write_text('subject,activity\nS1,walking\n')
    expect_error(path, None, 'is not a pickle')


def test_damaged_pickle(tmp_path):
    path = tmp_path / 'S1.pkl'
    path.write_bytes(b'\x80\x02}q\x00\xff\xff')   # a valid start, then no opcode at all
    expect_error(path, None, 'not a PPG-DaLiA pickle')


def test_empty_file(tmp_path):
    path = tmp_path / 'S1.pkl'
    path.write_bytes(b'')
    expect_error(path, None, 'empty')


def test_truncated_file(tmp_path, subject_path):
    path = tmp_path / 'S1.pkl'
    data = subject_path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    expect_error(path, None, 'truncated')


def test_foreign_pickle_of_another_type(tmp_path):
    expect_error(write(tmp_path / 'S1.pkl', [1, 2, 3]), None, 'holds a list')


def test_foreign_pickle_like_wesad(tmp_path, subject_dict):
    # WESAD's files look alike but have no 'activity' (and a 700 Hz 'label').
    wesad = broken(subject_dict, 'activity', delete=True)
    expect_error(write(tmp_path / 'S2.pkl', wesad), 'activity', 'missing')


def test_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / 'ran'

    class Exploit:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)

    path = write(tmp_path / 'S1.pkl', {'signal': Exploit()})
    error = expect_error(path, None, 'posix.system')
    assert 'never contains' in str(error)
    assert not marker.exists()


@pytest.mark.parametrize('key', dalia.TOP_LEVEL_KEYS)
def test_missing_top_level_key(tmp_path, subject_dict, key):
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, key, delete=True))
    expect_error(path, key, 'is missing')


@pytest.mark.parametrize('key', dalia.WRIST_KEYS)
def test_missing_wrist_signal(tmp_path, subject_dict, key):
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'signal', 'wrist', key, delete=True))
    expect_error(path, f'signal.wrist.{key}', 'is missing')


def test_missing_wrist_group(tmp_path, subject_dict):
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'signal', 'wrist', delete=True))
    expect_error(path, 'signal.wrist', 'is missing')


@pytest.mark.parametrize('shape', [(100,), (100, 2), (100, 3, 1)])
def test_wrong_acc_shape(tmp_path, subject_dict, shape):
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'signal', 'wrist', 'ACC',
                                             value=np.zeros(shape)))
    expect_error(path, 'signal.wrist.ACC', 'expected (n, 3)')


def test_acc_that_is_not_an_array(tmp_path, subject_dict):
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'signal', 'wrist', 'ACC',
                                             value=[[0, 0, 64]] * 10))
    expect_error(path, 'signal.wrist.ACC', 'expected a numpy array')


def test_bvp_length_inconsistent_with_acc(tmp_path, subject_dict):
    bvp = subject_dict['signal']['wrist']['BVP'][:-200]
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'signal', 'wrist', 'BVP', value=bvp))
    expect_error(path, 'signal.wrist.BVP', 'expected')


def test_activity_with_text_dtype(tmp_path, subject_dict):
    n = len(subject_dict['activity'])
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'activity',
                                             value=np.array(['walking'] * n)))
    expect_error(path, 'activity', 'expected numbers')


def test_activity_with_fractional_ids(tmp_path, subject_dict):
    activity = subject_dict['activity'] + 0.5
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'activity', value=activity))
    expect_error(path, 'activity', 'non-integer')


@pytest.mark.parametrize('bad_id', [9, -1, 42])
def test_activity_ids_out_of_range(tmp_path, subject_dict, bad_id):
    activity = subject_dict['activity'].copy()
    activity[5] = bad_id
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'activity', value=activity))
    error = expect_error(path, 'activity', 'outside 0..8')
    assert str(bad_id) in str(error)


def test_activity_with_nan(tmp_path, subject_dict):
    activity = subject_dict['activity'].copy()
    activity[3] = np.nan
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'activity', value=activity))
    expect_error(path, 'activity', 'NaN')


def test_label_length_inconsistent_with_bvp(tmp_path, subject_dict):
    label = np.concatenate([subject_dict['label'], [80.0, 80.0, 80.0]])
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'label', value=label))
    expect_error(path, 'label', 'floor((N_bvp - 512) / 128) + 1')


def test_bad_questionnaire_values(tmp_path, subject_dict):
    path = write(tmp_path / 'S1.pkl', broken(subject_dict, 'questionnaire', 'Gender', value='x'))
    expect_error(path, 'questionnaire.Gender', "expected 'm' or 'f'")
    path = write(tmp_path / 'S2.pkl', broken(subject_dict, 'questionnaire', 'AGE', value='old'))
    expect_error(path, 'questionnaire.AGE', 'expected a number')
    path = write(tmp_path / 'S3.pkl', broken(subject_dict, 'questionnaire', 'SPORT', delete=True))
    expect_error(path, 'questionnaire.SPORT', 'is missing')


def test_unknown_questionnaire_values_become_unknown(tmp_path, subject_dict):
    data = broken(subject_dict, 'questionnaire', 'HEIGHT', value=float('nan'))
    data['questionnaire']['Gender'] = ' '
    s = dalia.load_subject(write(tmp_path / 'S1.pkl', data))
    assert math.isnan(s.profile.height_cm)
    assert s.profile.sex == '' and s.profile.sex_code == profile.SEX_UNKNOWN


def test_python2_style_protocol_0_pickle_loads(tmp_path, subject_dict):
    # Protocol 0 is what a Python 2 pickle.dump writes by default.
    s = dalia.load_subject(write(tmp_path / 'S4.pkl', subject_dict, protocol=0))
    assert s.acc_g.shape == (MINUTES * 60 * 32, 3)
