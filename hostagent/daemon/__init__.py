"""The agent as a daemon: configuration, assembly, its two HTTP listeners and
the command line.
"""
