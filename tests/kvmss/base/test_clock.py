from kvmss.base.clock import iso8601


def test_iso8601_prints_milliseconds() -> None:
    assert iso8601(1_700_000_000.123) == "2023-11-14T22:13:20.123Z"


def test_iso8601_carries_rounding_into_the_next_second() -> None:
    # x.9996 s rounds to the next whole second, never to x.000 (one second early).
    assert iso8601(1_700_000_000.9996) == "2023-11-14T22:13:21.000Z"


def test_iso8601_carries_across_midnight() -> None:
    assert iso8601(1_700_006_399.9999) == "2023-11-15T00:00:00.000Z"


def test_iso8601_keeps_just_below_the_carry() -> None:
    assert iso8601(1_700_000_000.9994) == "2023-11-14T22:13:20.999Z"
