"""PPG-DaLiA loader, synthetic subject generator, sensor replay node and PPG-DaLiA to rosbag2 converter."""
