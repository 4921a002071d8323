"""controller.model.mergepatch against RFC 7396's own examples."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from controller.model.mergepatch import merge_patch

# RFC 7396 Appendix A, row by row: original, patch, result.
APPENDIX_A = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize(("original", "patch", "result"), APPENDIX_A)
def test_rfc7396_appendix_a(original: str, patch: str, result: str) -> None:
    assert merge_patch(json.loads(original), json.loads(patch)) == json.loads(result)


def test_rfc7396_section_3_example() -> None:
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    assert merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


def test_inputs_are_not_changed_and_result_shares_nothing() -> None:
    target: dict[str, Any] = {"a": {"b": [1, 2], "c": {"d": 1}}, "e": 1}
    patch: dict[str, Any] = {"a": {"c": {"x": [3]}}, "e": None, "f": {"g": [4]}}
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    result = merge_patch(target, patch)
    assert result == {"a": {"b": [1, 2], "c": {"d": 1, "x": [3]}}, "f": {"g": [4]}}
    assert target == target_before
    assert patch == patch_before
    result["a"]["b"].append(99)
    result["a"]["c"]["x"].append(99)
    result["f"]["g"].append(99)
    assert target == target_before
    assert patch == patch_before


def test_non_object_target_is_replaced_by_patch_object() -> None:
    assert merge_patch("text", {"a": 1, "b": None}) == {"a": 1}
    assert merge_patch(None, {"a": {"b": None}}) == {"a": {}}
