"""The bridge node to the MusicGen server, the wire protocol, and the standalone MusicGen WebSocket server (runs without ROS)."""
