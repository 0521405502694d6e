"""Activity, heart rate and taste to a MusicGen text prompt: templates, style presets, tempo mapping, hysteresis and the prompt node."""
