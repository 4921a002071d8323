"""The scale set model: the body of PUT /v1/scaleSets/{name}, validated."""
