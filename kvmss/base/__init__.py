"""The base both daemons and every tool stand on; it imports nothing else of
kvmss, so anything may use it.
"""
