"""The activity vocabulary of MUSE, from PPG-DaLiA (plain Python: no rclpy, no messages).

Activity ids are list indices (PPG-DaLiA readme: 0 = transient periods between activities).
The encoder's class names, the prompt presets' energy tables, the ground truth and the
session report all use these names, so they are defined here once.
"""

ACTIVITY_NAMES = ('transient', 'sitting', 'stairs', 'table_soccer', 'cycling', 'driving',
                  'lunch_break', 'walking', 'working')
# How prompts and plots name them (the dataset paper's wording).
ACTIVITY_DISPLAY_NAMES = ('Transition', 'Sitting', 'Ascending/Descending Stairs',
                          'Table Soccer', 'Cycling', 'Driving a Car', 'Lunch Break',
                          'Walking', 'Working at Desk')
NUM_ACTIVITIES = len(ACTIVITY_NAMES)
TRANSIENT = ACTIVITY_NAMES.index('transient')
