"""What every layer of the controller shares: its one error, its settings
and the runner of its background threads."""
