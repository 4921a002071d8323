"""Health: the probes the agent runs from the host and the verdict."""
