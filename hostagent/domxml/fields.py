"""Checking and reading the fields of libvirt domain XML, so that every error
of the typed model names the field and what is wrong.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

_MAC_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")


# ---- validation helpers ------------------------------------------------------


def one_of(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field} {value!r} is not supported (use one of: {', '.join(allowed)})")


def absolute(field: str, value: str) -> None:
    if not value or not os.path.isabs(value):
        raise ValueError(f"{field} {value!r} must be an absolute path")


def optional_absolute(field: str, value: str | None) -> None:
    if value is not None:
        absolute(field, value)


def nonempty(field: str, value: str) -> None:
    if not value:
        raise ValueError(f"{field} must not be empty")


def check_mac(field: str, value: str) -> None:
    if not _MAC_RE.fullmatch(value):
        raise ValueError(f"{field} {value!r} is not a lowercase MAC address like 52:54:00:12:34:56")


def boot_triplet(where: str, kernel: str | None, initrd: str | None, cmdline: str | None) -> None:
    optional_absolute(f"{where} kernel", kernel)
    optional_absolute(f"{where} initrd", initrd)
    if kernel is None and initrd is not None:
        raise ValueError(f"{where} initrd needs a kernel")
    if kernel is None and cmdline is not None:
        raise ValueError(f"{where} cmdline needs a kernel")
    if cmdline is not None and not cmdline:
        raise ValueError(f"{where} cmdline must not be empty (use None for no cmdline)")


# ---- parsing helpers ----------------------------------------------------------


def attr(el: ET.Element, name: str, field: str) -> str:
    value = el.get(name)
    if value is None:
        raise ValueError(f"{field}: attribute {name!r} is missing")
    return value


def int_of(field: str, text: str | None) -> int:
    if text is None:
        raise ValueError(f"{field} is missing")
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{field} {text[:40]!r} is not an integer") from None


def child(el: ET.Element, path: str, field: str) -> ET.Element:
    found = el.find(path)
    if found is None:
        raise ValueError(f"{field}: element <{path}> is missing")
    return found


def text_of(el: ET.Element | None) -> str | None:
    if el is None:
        return None
    return el.text or ""


def sub(parent: ET.Element, tag: str, attrib: dict[str, str] | None = None) -> ET.Element:
    return ET.SubElement(parent, tag, attrib or {})


def set_optional(el: ET.Element, name: str, value: str | None) -> None:
    if value is not None:
        el.set(name, value)
