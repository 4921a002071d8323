"""Disk files on the host: the base image cache and where the agent keeps
things.
"""
