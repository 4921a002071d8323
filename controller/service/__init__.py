"""The controller's behaviour behind its API, assembled from its parts, and
the daemon that serves it.
"""
