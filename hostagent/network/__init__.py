"""The host's guest network: the bridge, static addresses, nftables isolation.
The only package of the agent that imports pyroute2.
"""
