"""libvirt domain XML as a typed model (frozen dataclasses that write and parse
themselves) and the designer that decides what goes in it.
"""
