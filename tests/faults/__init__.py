"""Fault scenarios on real agents and tiny TCG guests, and the reliability record."""
