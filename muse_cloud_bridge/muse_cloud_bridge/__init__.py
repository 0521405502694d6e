"""The ROS node that links a MUSE graph to a music server (muse_server) over muse_protocol."""
