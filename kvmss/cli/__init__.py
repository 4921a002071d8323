"""The ``kvmss`` command line: one module per command group."""
