"""The MUSE wire protocol, its asyncio client and the shared-secret rules. No ROS."""
