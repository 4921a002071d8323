"""libvirt itself: the only package of kvmss that imports it."""
