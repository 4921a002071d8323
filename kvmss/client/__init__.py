"""The tools' side of the controller's API: the HTTP client, the live view of a
rolling upgrade, tables for people, and publishing built images.
"""
