"""Schema-driven fuzzing of a kvmss FastAPI app with schemathesis.

Every operation of the app's OpenAPI document is exercised with generated
path parameters, query parameters, headers and bodies, both fitting the
schema (positive) and not (negative). Each generated case is sent twice: with
the valid bearer token and unauthenticated (its generated headers, which
never carry the token). Every response must keep the project's rule: no 5xx,
every 4xx body exactly ``{"error": {"code": str, "message": str}}``, no
traceback and never the bearer token in any body, and nothing but the public
endpoints answers 2xx to an unauthenticated caller.

Runs are reproducible (hypothesis derandomized, no example database).
``KVMSS_FUZZ_TRACE=1`` prints every request and its answer, for looking at
what the fuzzer reaches.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.core.result import Ok

FuzzCase = Case[Any]
Operation = APIOperation[Any, Any, Any, Any]
Draw = Callable[[st.SearchStrategy[Any]], Any]
# Adjusts a generated case before it is sent (points it at things that exist,
# keeps it off the network); choices made with ``draw`` are part of the example.
CaseMapper = Callable[[FuzzCase, Draw], None]
# Sees every authenticated request and its answer (to collect operation ids).
Observer = Callable[[FuzzCase, schemathesis.Response], None]

TRACEBACK_RE = re.compile(r'Traceback \(most recent call last\)|File "[^"]+", line \d+')
TRACE = os.environ.get("KVMSS_FUZZ_TRACE") == "1"


@dataclass
class FuzzReport:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    # (operation, status) of the authenticated requests
    outcomes: Counter[tuple[str, int]] = field(default_factory=Counter)

    def operations(self) -> set[str]:
        return {label for label, _status in self.outcomes}

    def summary(self) -> str:
        return f"{self.sent} requests; statuses {dict(sorted(self.statuses.items()))}"


@dataclass(frozen=True)
class FuzzTarget:
    token: str
    public_paths: frozenset[str]
    mappers: Sequence[CaseMapper]
    observers: Sequence[Observer]
    report: FuzzReport


def body_text(response: schemathesis.Response) -> str:
    """The body as text (image blobs are bytes, not UTF-8)."""
    return response.content.decode("utf-8", "replace")


def check_response(what: str, status: int, text: str, *, authenticated: bool, public: bool) -> None:
    """The project's rule for one response, as assertions naming the request."""
    assert status < 500, f"{what}: {status} {text[:500]}"
    assert not TRACEBACK_RE.search(text), f"{what}: traceback in the body: {text[:500]}"
    if 400 <= status < 500:
        try:
            body = json.loads(text)
        except ValueError:
            raise AssertionError(f"{what}: {status} body is not JSON: {text[:500]}") from None
        assert isinstance(body, dict) and set(body) == {"error"}, f"{what}: {text[:500]}"
        err = body["error"]
        assert isinstance(err, dict) and set(err) == {"code", "message"}, f"{what}: {text[:500]}"
        assert isinstance(err["code"], str) and err["code"], f"{what}: {text[:500]}"
        assert isinstance(err["message"], str) and err["message"], f"{what}: {text[:500]}"
    if not authenticated and not public:
        assert not 200 <= status < 300, f"{what}: unauthenticated request answered {status}"


# Path segments that have broken servers before: NUL, dot segments, an
# encoded slash, a percent sign, spaces, a right-to-left mark, overlong.
HOSTILE_SEGMENTS = ("a\x00b", "\x00", ".", "..", "a/b", "%", "%2F", " x", "\u202e", "x" * 300)


def known_values(values: Mapping[str, Sequence[str]]) -> CaseMapper:
    """A mapper that, for each path parameter, keeps the generated value or
    (as hypothesis chooses) puts one that exists (from ``values``) or one of
    :data:`HOSTILE_SEGMENTS`."""

    def mapper(case: FuzzCase, draw: Draw) -> None:
        for name in list(case.path_parameters or {}):
            choices = list(values.get(name, ()))
            pick = draw(st.sampled_from(["generated", "hostile", *(["known"] if choices else [])]))
            if pick == "known":
                case.path_parameters[name] = draw(st.sampled_from(choices))
            elif pick == "hostile":
                case.path_parameters[name] = draw(st.sampled_from(HOSTILE_SEGMENTS))

    return mapper


def _send(target: FuzzTarget, case: FuzzCase, what: str, headers: dict[str, str] | None) -> None:
    try:
        response = case.call(headers=headers)
    except Exception as e:
        # The in-process app re-raises what its 500 handler answered.
        raise AssertionError(f"{what}: 500, the app raised {type(e).__name__}: {e}") from e
    text = body_text(response)
    report = target.report
    report.sent += 1
    report.statuses[response.status_code] += 1
    if headers is not None:
        report.outcomes[case.operation.label, response.status_code] += 1
        for observe in target.observers:
            observe(case, response)
    if TRACE:
        print(f"FUZZ {what[:300]} -> {response.status_code} {text[:300]} body={case.body!r:.300}")
    assert target.token not in text, f"{what}: the bearer token is in the answer"
    check_response(
        what,
        response.status_code,
        text,
        authenticated=headers is not None,
        public=case.operation.path in target.public_paths,
    )


def _fuzz_operation(target: FuzzTarget, op: Operation, mode: GenerationMode, examples: int) -> None:
    auth = {"Authorization": f"Bearer {target.token}"}

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=op.as_strategy(generation_mode=mode), data=st.data())
    def run(case: FuzzCase, data: st.DataObject) -> None:
        for mapper in target.mappers:
            mapper(case, data.draw)
        what = f"{op.label} [{mode.value}] path={case.path_parameters} query={case.query}"
        _send(target, case, f"{what} (authenticated)", auth)
        if str(case.headers.get("Authorization", "")).partition(" ")[2] == target.token:
            del case.headers["Authorization"]
        _send(target, case, f"{what} (unauthenticated)", None)

    started = time.monotonic()
    run()
    if TRACE:
        print(f"TIME {op.label} [{mode.value}] {time.monotonic() - started:.2f}s")


def fuzz_app(
    app: FastAPI,
    *,
    token: str,
    examples: int,
    public_paths: frozenset[str] = frozenset(),
    schema_overrides: Callable[[dict[str, Any]], None] | None = None,
    mappers: Sequence[CaseMapper] = (),
    observers: Sequence[Observer] = (),
    before_operation: Callable[[], None] | None = None,
) -> FuzzReport:
    """Fuzz every operation of ``app``: up to ``examples`` generated cases per
    operation and generation mode, each sent authenticated and not.

    ``schema_overrides`` may edit a copy of the OpenAPI document first (to
    declare request bodies a route reads by hand); ``before_operation`` runs
    before each operation is fuzzed (to put back what earlier ones deleted).
    """
    doc = json.loads(json.dumps(app.openapi()))
    if schema_overrides is not None:
        schema_overrides(doc)
    schema = schemathesis.openapi.from_dict(doc)
    schema.app = app
    target = FuzzTarget(token, public_paths, mappers, observers, FuzzReport())
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"operation not loadable: {result}"
        operations.append(result.ok())
    assert operations, "the OpenAPI document has no operations"
    for op in operations:
        if before_operation is not None:
            before_operation()
        _fuzz_operation(target, op, GenerationMode.POSITIVE, examples)
        # Free-form string path parameters and headers, and raw bytes, cannot
        # be made invalid: only JSON bodies and query parameters give negative
        # cases (hypothesis would find none and call the test unsatisfiable).
        if len(op.query) or any("json" in body.media_type for body in op.body):
            _fuzz_operation(target, op, GenerationMode.NEGATIVE, examples)
    return target.report
