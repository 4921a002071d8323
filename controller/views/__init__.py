"""Instance views as the agents last reported them, kept fresh by a watcher,
and a scale set's instances as the API shows them."""
