"""The hosts and what runs on them: the agents' port, placement, the specs
sent to agents.
"""
