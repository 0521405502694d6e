"""Wrist accelerometer to activity: AccelToRGBMel features, the activity CNN, its training CLI and the encoder node."""
