"""The controller's REST API."""
