"""The hosts and what runs on them: the agents' port and the registered hosts,
placement, the specs sent to agents, reconciling a scale set's instances to
its model, reimages by hand, and waiting for an agent's operation.
"""
