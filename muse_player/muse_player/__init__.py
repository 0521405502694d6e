"""Jitter buffer, overlap-add mixer, sounddevice / WAV / null sinks and the audio player node."""
