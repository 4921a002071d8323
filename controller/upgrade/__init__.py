"""Rolling OS upgrades: the plan, the persisted state machine that runs it,
one instance's steps through it, and how it is shown.
"""
