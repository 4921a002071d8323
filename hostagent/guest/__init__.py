"""What goes into a guest and comes back from it: NoCloud seeds, user-data,
extensions, per-instance tokens and the guests' reports.
"""
