"""The MUSE music server: WebSocket sessions and the synth and MusicGen backends. No ROS."""
