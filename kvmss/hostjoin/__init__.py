"""Joining a host over SSH and taking it out again (``kvmss host add|remove
--ssh``)."""
