"""``kvmss lab``: a local lab on one machine (a controller, host agents, the
demo scale set and its upgrade shown live), and taking it down.
"""
