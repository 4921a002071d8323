"""Rolling OS upgrades: what starts them, the plan, the persisted state
machine that runs them (the batches; each instance's steps, rows and
rollbacks; what the agents are observed to say), and how they are shown.
"""
