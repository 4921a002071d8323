"""The tools' side of the controller's API, spoken over HTTP only: nothing
here imports the controller.
"""
