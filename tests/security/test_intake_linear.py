"""One message cannot stall the intake: the contract reads any body in time linear in its size.

Issue 13, finding 1: the contract stripped strings with ``"(?:[^"\\]|\\.)*"`` before counting
nesting, and an unterminated run of ``\\"`` made it backtrack quadratically (32 KB took 3.7 s,
256 KiB about 4 minutes, on the worker's event loop). These tests time the whole contract as the
intake runs it (``parse_event``: bounds, parse, validation) on hostile shapes at 16, 32, 64 and
256 KiB and assert growth, never an absolute time (speed figures: ``python -m bench.intake_check``).

How the time is taken: the best of a few runs, in this thread's CPU time (other processes on a
shared machine do not count) and with the garbage collector paused, as ``timeit`` does (a full
collection walks the whole process's heap, which is not the contract's work).

Linear work takes 8x as long on 8x the bytes, so "within 8x" leaves no room: the bound is 8x
times ``SLACK``. The parsed tree of a 256 KiB body outgrows the CPU's caches, which alone gave
ratios up to 10 for the linear code; quadratic growth is 64x.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from bench import intake_shapes as shapes
from worker.intake.contract import parse_event
from worker.intake.wire import ContractError, nesting_depth

KIB = 1024
SLACK = 1.5
#: Runs per size at most; fewer once a size has used this much CPU time (slow runs vary less).
REPEATS = 5
ENOUGH_SECONDS = 0.2
ATTEMPTS = 3

Builder = Callable[[int], bytes]


class _OverBudget(Exception):
    pass


def _over_budget(signum: int, frame: Any) -> None:
    raise _OverBudget


@contextlib.contextmanager
def _cpu_budget(seconds: float) -> Iterator[None]:
    """Interrupt the block once the process has used ``seconds`` of CPU time.

    A quadratic check takes minutes at 256 KiB; the regular expression engine checks for signals,
    so the run is cut off as soon as it has certainly missed its bound. The virtual timer counts
    CPU time (pytest-timeout owns the real-time alarm).
    """
    if math.isinf(seconds):
        yield
        return
    previous = signal.signal(signal.SIGVTALRM, _over_budget)
    signal.setitimer(signal.ITIMER_VIRTUAL, max(seconds, 0.05))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def _contract(body: bytes) -> None:
    with contextlib.suppress(ContractError):
        parse_event(body)


def _best_cpu_seconds(body: bytes, *, budget: float) -> float:
    """Best CPU time of the contract on ``body``; infinite if a run overran ``budget``."""
    best = math.inf
    spent = 0.0
    for _ in range(REPEATS):
        gc.disable()
        started = time.thread_time()
        try:
            with _cpu_budget(budget):
                _contract(body)
        except _OverBudget:
            return math.inf
        finally:
            elapsed = time.thread_time() - started
            gc.enable()
        best = min(best, elapsed)
        spent += elapsed
        if spent > ENOUGH_SECONDS:
            break
    return best


def _growth(build: Builder) -> dict[int, float]:
    """CPU time per size in KiB. A run is cut off at twice what linear growth (with slack)
    allows from the fastest rate per byte of the sizes before it."""
    times: dict[int, float] = {}
    for size in (16, 32, 64, 256):
        body = build(size * KIB)
        assert len(body) > size * KIB * 0.95, "the shape did not fill its size"
        rate = min((seconds / done for done, seconds in times.items()), default=math.inf)
        times[size] = _best_cpu_seconds(body, budget=2 * SLACK * rate * size)
        if math.isinf(times[size]):
            times[256] = math.inf  # cut off: a bigger body can only take longer
            break
    return times


builders = st.one_of(
    st.builds(partial, st.just(shapes.escaped_quotes), terminated=st.booleans()),
    st.builds(partial, st.just(shapes.backslash_run), odd=st.booleans()),
    st.builds(partial, st.just(shapes.long_keys), key_chars=st.integers(8, 256)),
    st.builds(
        partial,
        st.just(shapes.wide_array),
        item=st.sampled_from([b'"a"', b'"\\""', b"{}", b"[]", b"null", b"true", b"-1.5e3"]),
    ),
    st.just(shapes.small_numbers),
    st.builds(partial, st.just(shapes.deep_within_limit), depth=st.integers(1, 30)),
)


def _shown(times: dict[int, float]) -> str:
    return ", ".join(
        f"{size} KiB " + ("cut off" if math.isinf(seconds) else f"{seconds * 1000:.2f} ms")
        for size, seconds in times.items()
    )


@settings(
    max_examples=15,
    deadline=None,
    # A timing does not shrink: every example is a fresh measurement, reported as found.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(build=builders)
@example(build=partial(shapes.escaped_quotes, terminated=False))  # the finding itself
@example(build=partial(shapes.escaped_quotes, terminated=True))
@example(build=partial(shapes.backslash_run, odd=True))
@example(build=partial(shapes.long_keys, key_chars=256))
@example(build=partial(shapes.wide_array, item=b"{}"))
@example(build=shapes.small_numbers)
@example(build=partial(shapes.deep_within_limit, depth=30))
def test_the_contract_takes_time_linear_in_the_body_whatever_its_shape(build: Builder) -> None:
    # A ratio just over the bound is measured again (another process's burst can slow one
    # size); a run cut off for overrunning its budget is not.
    for _ in range(ATTEMPTS):
        times = _growth(build)
        if times[256] <= 8 * SLACK * times[32] or math.isinf(times[256]):
            break

    assert times[256] <= 8 * SLACK * times[32], f"{build}: {_shown(times)}"


def test_sixty_thousand_small_numbers_fit_in_the_largest_body() -> None:
    body = shapes.small_numbers(256 * KIB)

    assert len(body) <= 256 * KIB
    assert body.count(b",") + 1 >= 60_000
    assert parse_event(body).model_dump()["x"][:3] == [0, 1, 2]


# --- the scanner that replaced the regular expression measures what the parser would ---------

json_text = st.text(alphabet=st.sampled_from('ab"\\[]{}/\n\u00e9\u2028'), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@given(value=json_values, ensure_ascii=st.booleans())
def test_nesting_is_measured_as_deep_as_the_json_really_nests(value, ensure_ascii):
    body = json.dumps(value, ensure_ascii=ensure_ascii).encode()

    assert nesting_depth(body) == _depth(value)


def test_brackets_in_strings_with_escaped_quotes_and_backslashes_do_not_count():
    body = json.dumps({"a": '\\"[[[', "b": ["\\", "]]]{{"], "c": '"\\\\"'}).encode()

    assert nesting_depth(body) == 2
