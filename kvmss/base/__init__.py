"""The base both daemons and every tool stand on: injected time and the one
wait helper, atomic files, qemu-img, configuration files, the HTTP error
shape, serving under systemd. It imports nothing else of kvmss.
"""
