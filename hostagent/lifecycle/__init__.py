"""Instance lifecycle on one host: create, reimage, rollback, commit, start,
stop, delete; long operations, their journal and recovery after a crash.
"""
