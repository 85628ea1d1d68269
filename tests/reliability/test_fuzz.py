"""Property: no generated request makes the server answer INTERNAL or UNKNOWN, or fall over.

Hypothesis generates Search, BatchSearch and GetPassages requests (arbitrary Unicode
including control and non-BMP characters, any int32, any float32 including NaN and
infinities, long and short values) and raw byte bodies. Whatever the input, the answer
is OK or a deliberate status; the server keeps answering a normal query correctly. The
example counts are fixed so the run is bounded (2,000 generated requests in all).
"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dprscope.v1 import retrieval_pb2 as rpb
from tests.reliability._harness import BAD_CODES, call

R = "/dprscope.v1.Retriever/"
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
EXAMPLES = {"search": 1000, "batch": 200, "passages": 450, "raw": 350}
COUNTED: dict[str, int] = dict.fromkeys(EXAMPLES, 0)
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

# protobuf strings must be valid UTF-8: every code point except surrogates
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=48)
long_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=900, max_size=1400)
query = st.one_of(text, text.map(lambda s: s + " capital of france"), long_text,
                  st.sampled_from(["", " ", "\x00", "\u202e", "🦜" * 1025, "a" * 4096, "a" * 4097]))
int32 = st.one_of(st.integers(-3, 40), st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1000, 1001, 65537]))
float32 = st.one_of(st.none(), st.floats(width=32), st.floats(-1, 1, width=32))
version = st.one_of(st.just(""), st.just("v1"), text, st.text(min_size=3000, max_size=9000))


@pytest.fixture(scope="module")
def fuzz_channel(server):
    with grpc.insecure_channel(server.target) as channel:
        yield channel


def _normal_query_still_works(channel: grpc.Channel) -> None:
    out = call(channel, R + "Search", rpb.SearchRequest(query="who painted the mona lisa", top_k=3))
    assert out.code == grpc.StatusCode.OK and out.responses == 1


def _check(outcome, request) -> None:
    assert outcome.code not in BAD_CODES, f"{outcome.code.name}: {outcome.details!r} for {str(request)[:300]!r}"
    assert outcome.code in ALLOWED, f"{outcome.code.name}: {outcome.details!r}"
    if outcome.code != grpc.StatusCode.OK:
        assert outcome.details.strip()


@settings(FUZZ, max_examples=EXAMPLES["search"])
@given(q=query, top_k=int32, threshold=float32, model_version=version, ef=int32, nprobe=int32,
       exact=st.booleans(), omit=st.booleans())
def test_search_never_internal(fuzz_channel, q, top_k, threshold, model_version, ef, nprobe, exact, omit):
    request = rpb.SearchRequest(query=q, top_k=top_k, model_version=model_version, ef_search=ef, nprobe=nprobe,
                                exact=exact, omit_text=omit)
    if threshold is not None:
        request.score_threshold = threshold
    COUNTED["search"] += 1
    _check(call(fuzz_channel, R + "Search", request), request)


@settings(FUZZ, max_examples=EXAMPLES["batch"])
@given(queries=st.lists(query, max_size=6) | st.lists(st.just("q"), min_size=250, max_size=260),
       top_k=int32, threshold=float32)
def test_batch_search_never_internal(fuzz_channel, queries, top_k, threshold):
    request = rpb.BatchSearchRequest(queries=queries, top_k=top_k)
    if threshold is not None:
        request.score_threshold = threshold
    COUNTED["batch"] += 1
    _check(call(fuzz_channel, R + "BatchSearch", request), request)


@settings(FUZZ, max_examples=EXAMPLES["passages"])
@given(ids=st.lists(st.one_of(text, st.integers(0, 10**12).map(str), st.text(min_size=500, max_size=600)),
                    max_size=8) | st.lists(st.just("1"), min_size=995, max_size=1005))
def test_get_passages_never_internal(fuzz_channel, ids):
    request = rpb.GetPassagesRequest(ids=ids)
    COUNTED["passages"] += 1
    _check(call(fuzz_channel, R + "GetPassages", request), request)


@settings(FUZZ, max_examples=EXAMPLES["raw"])
@given(body=st.binary(max_size=256), method=st.sampled_from(["Search", "BatchSearch", "GetPassages",
                                                              "GetIndexInfo"]))
def test_raw_bodies_never_internal(fuzz_channel, body, method):
    COUNTED["raw"] += 1
    _check(call(fuzz_channel, R + method, body), body)


def test_server_survived_the_fuzzing(fuzz_channel, server, capsys):
    """Runs after the properties (file order): still SERVING, still correct, and the count."""
    _normal_query_still_works(fuzz_channel)
    assert server.registry.active_name == "v1"
    total = sum(COUNTED.values())
    with capsys.disabled():
        print(f"\n[fuzz] {total} generated requests: " + ", ".join(f"{k} {v}" for k, v in COUNTED.items()))
    if total:  # when run alone (-k) the properties did not run
        assert total >= 2000
