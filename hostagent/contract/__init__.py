"""The agent's wire contract: the schema, the table of calls, and the client the
controller uses. It imports nothing of the agent's own.
"""
