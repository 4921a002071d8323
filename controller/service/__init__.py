"""The controller's behaviour behind its API: the parts of the layers below,
composed, and the scale set models as the API writes them."""
