"""The controller's persistent state over SQLAlchemy Core: the only package
that imports SQLAlchemy.
"""
