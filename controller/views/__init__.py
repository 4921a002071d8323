"""Instance views as the agents last reported them, kept fresh by a watcher."""
