"""Conventions every MUSE node shares: topic names, QoS by role, diagnostics, the node main loop."""
