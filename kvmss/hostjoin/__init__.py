"""Joining a host over SSH and taking it out again (``kvmss host add|remove
--ssh``): the SSH session, the install and removal steps, the agent's unit.
"""
