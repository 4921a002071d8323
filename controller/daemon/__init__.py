"""The controller as a daemon: its configuration file and the server that runs
the API under systemd."""
