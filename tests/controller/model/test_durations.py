"""controller.model.durations: the ISO 8601 duration subset of Azure's API."""

from __future__ import annotations

import math

import pytest

from controller.model.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT0S", 0.0),
        ("PT5M", 300.0),
        ("PT1H30M", 5400.0),
        ("PT1.5S", 1.5),
        ("PT1,5S", 1.5),
        ("PT1H0.5M", 3630.0),
        ("P1D", 86400.0),
        ("P0D", 0.0),
        ("P1DT2H", 93600.0),
        ("PT36H", 129600.0),
        ("P1DT1H1M1.25S", 90061.25),
        ("PT90S", 90.0),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P",
        "PT",
        "P1DT",
        "P1Y",
        "P1M",
        "P1W",
        "P1Y2M",
        "PT1.5M30S",  # only the last component may have a fraction
        "5M",
        "pt5m",
        "-PT5M",
        "PT-5M",
        "PT5M ",
        " PT5M",
        "PT5",
        "PT5M5H",  # out of order
        "PT.5S",
        "PT5.S",
        "P1D" + "T1H" * 30,
        "PT" + "9" * 100 + "S",
        "300",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text, "properties.x.pauseTimeBetweenBatches")
    err = info.value
    assert err.field == "properties.x.pauseTimeBetweenBatches"
    assert str(err).startswith(
        "properties.x.pauseTimeBetweenBatches: must be an ISO 8601 duration such as PT5M"
    )
    assert isinstance(err, ValueError)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(DurationError):
        parse_duration(300, "f")  # type: ignore[arg-type]


def test_fraction_rule_is_explained() -> None:
    with pytest.raises(DurationError, match="only the last component"):
        parse_duration("PT1.5H30M", "f")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "PT0S"),
        (0.0, "PT0S"),
        (300, "PT5M"),
        (5400, "PT1H30M"),
        (1.5, "PT1.5S"),
        (0.001, "PT0.001S"),
        (0.25, "PT0.25S"),
        (3600, "PT1H"),
        (86400, "P1D"),
        (90000, "P1DT1H"),
        (90061.5, "P1DT1H1M1.5S"),
        (7200, "PT2H"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, 0.5, 1, 59, 61, 299.999, 3600, 3601.5, 86399, 1e6 + 0.125])
def test_format_then_parse_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds), "f") == pytest.approx(seconds)


@pytest.mark.parametrize("seconds", [-1, -0.001, math.inf, math.nan])
def test_format_rejects(seconds: float) -> None:
    with pytest.raises(ValueError):
        format_duration(seconds)
