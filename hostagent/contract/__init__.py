"""The agent's contract, docs/design.md "The agent contract": the instance
spec, the views and operations agents answer, names and limits, the table of
calls and the client the controller uses. It imports nothing of the agent's own.
"""
