"""The controller's persistent state over SQLAlchemy Core (the only package
that imports SQLAlchemy): one repository per table behind a facade, the
records they hold, and the states of upgrades with their transitions.
"""
