"""Launch file, parameter YAML and the runner that starts the whole MUSE graph."""
