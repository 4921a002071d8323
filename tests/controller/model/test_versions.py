"""controller.model.versions: dotted-integer image versions."""

from __future__ import annotations

import random

import pytest

from controller.model.versions import (
    is_version,
    newest,
    parse_version,
    sort_newest_first,
    version_key,
)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("1", (1,)),
        ("0", (0,)),
        ("1.10", (1, 10)),
        ("2016.127.20180613", (2016, 127, 20180613)),
        ("1.2.3.4", (1, 2, 3, 4)),
        ("1.01", (1, 1)),
    ],
)
def test_parse_version_accepts_dotted_integers(text: str, parts: tuple[int, ...]) -> None:
    assert parse_version(text) == parts
    assert is_version(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "latest",
        "1.",
        ".1",
        "1..2",
        "1.2.3.4.5",
        "1.a",
        "v1.0",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.2\n",
        "\u00b2",  # superscript two: str.isdigit() says yes, but it is not 0-9
        "\u0661",  # Arabic-Indic digit one
        "1" * 65,
    ],
)
def test_parse_version_rejects_with_the_version_and_rule(text: str) -> None:
    with pytest.raises(ValueError, match="version") as info:
        parse_version(text)
    assert not is_version(text)
    message = str(info.value)
    assert "must be" in message
    if len(text) <= 16:
        assert repr(text) in message


def test_parse_version_long_input_is_cut_in_the_message() -> None:
    with pytest.raises(ValueError, match="at most 64 characters") as info:
        parse_version("9" * 5000)
    assert len(str(info.value)) < 200


def test_sixty_four_characters_is_the_limit() -> None:
    four_parts = ".".join(["1" * 15] * 4)  # 63 characters
    assert is_version(four_parts)
    assert is_version(four_parts + "1")
    assert not is_version(four_parts + "11")


def test_newest_compares_as_integers_not_strings() -> None:
    assert newest(["2016.127.20180601", "2016.127.20180613"]) == "2016.127.20180613"
    assert newest(["1.9", "1.10"]) == "1.10"
    assert newest(["9", "10"]) == "10"
    assert newest(["1.2.3", "1.3"]) == "1.3"
    assert newest(["2", "1.9.9.9"]) == "2"


def test_newest_of_nothing_is_none() -> None:
    assert newest([]) is None
    assert newest(iter(())) is None


def test_newest_accepts_any_iterable() -> None:
    assert newest(v for v in ["1.0", "3.0", "2.0"]) == "3.0"


def test_missing_parts_tie_and_the_string_breaks_the_tie() -> None:
    # 1.0 and 1.0.0 are equally new; the tie-break is the string, whatever the input order.
    assert newest(["1.0", "1.0.0"]) == "1.0.0"
    assert newest(["1.0.0", "1.0"]) == "1.0.0"
    assert newest(["1.1", "1.01"]) == "1.1"
    assert newest(["1.01", "1.1"]) == "1.1"
    # ... but they stay distinct strings
    assert sort_newest_first(["1.0", "1.0.0"]) == ["1.0.0", "1.0"]
    # the tie-break is the whole string, not the number of parts
    assert newest(["1.0.0", "1.00"]) == "1.00"
    assert version_key("1")[0] == version_key("1.0.0.0")[0] == (1, 0, 0, 0)
    # a tie never outranks a strictly newer version
    assert newest(["1.0.0.0", "1.0.1", "1.0"]) == "1.0.1"


def test_newest_rejects_a_bad_version() -> None:
    with pytest.raises(ValueError, match="'latest'"):
        newest(["1.0", "latest"])


def test_sort_newest_first() -> None:
    versions = ["1.9", "1.10", "0.1", "2016.127.20180601", "2016.127.20180613", "1.10.0"]
    assert sort_newest_first(versions) == [
        "2016.127.20180613",
        "2016.127.20180601",
        "1.10.0",
        "1.10",
        "1.9",
        "0.1",
    ]


def test_sort_keeps_duplicates_and_does_not_mutate() -> None:
    versions = ["1", "2", "1"]
    assert sort_newest_first(versions) == ["2", "1", "1"]
    assert versions == ["1", "2", "1"]
    assert sort_newest_first([]) == []


def test_sort_order_does_not_depend_on_input_order() -> None:
    rng = random.Random(20180613)
    pool = ["1", "1.0", "1.0.0", "1.00", "1.1", "1.01", "1.10", "1.9", "2", "10.0", "0.0.0.1"]
    expected = sort_newest_first(pool)
    for _ in range(50):
        shuffled = pool[:]
        rng.shuffle(shuffled)
        assert sort_newest_first(shuffled) == expected
        assert newest(shuffled) == expected[0]
    # and consecutive versions never go up numerically
    numeric = [version_key(v)[0] for v in expected]
    assert numeric == sorted(numeric, reverse=True)
