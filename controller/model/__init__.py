"""The scale set model: the body of PUT /v1/scaleSets/{name}, validated, and
the rolling policy an upgrade runs under, derived from it."""
