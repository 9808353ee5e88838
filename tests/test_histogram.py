"""The latency histogram every long run uses (ckdemo/histogram.py): its percentiles against the
exact ones of the same samples, within the relative error it states, and a size that does not grow
with the number of samples."""

from __future__ import annotations

import random

import pytest

from ckdemo.histogram import BUCKETS, HIGHEST_NS, LOWEST_NS, RELATIVE_ERROR, LatencyHistogram

PERCENTILES = (0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100)


def exact(samples: list[int], p: float) -> int:
    """The rank the figures used when every sample was kept (and what the histogram promises)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def histogram_of(samples: list[int]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for ns in samples:
        histogram.record(ns)
    return histogram


def within_error(found: float, expected: int) -> bool:
    return abs(found - expected) <= expected * RELATIVE_ERROR * (1 + 1e-9)


def test_the_stated_error_is_about_one_percent():
    assert 0.009 < RELATIVE_ERROR < 0.01


@pytest.mark.parametrize(
    "name, draw",
    [
        ("lognormal around 50 us (a sign)", lambda rng: int(rng.lognormvariate(10.8, 0.6))),
        (
            "two modes: 3 us calls, 40 ms failovers",
            lambda rng: rng.choice((int(rng.gauss(3000, 300)), int(rng.gauss(4e7, 5e6)))),
        ),
        ("uniform 1 us to 1 s", lambda rng: rng.randint(1000, 10**9)),
        ("heavy tail (pareto)", lambda rng: int(2000 * rng.paretovariate(1.2))),
    ],
)
def test_percentiles_within_the_stated_error_of_the_exact_ones(name, draw):
    rng = random.Random(19)
    samples = [max(LOWEST_NS, min(HIGHEST_NS, draw(rng))) for _ in range(20_000)]
    histogram = histogram_of(samples)
    for p in PERCENTILES:
        assert within_error(histogram.percentile(p), exact(samples, p)), (name, p)
    assert histogram.percentile(100) == max(samples)  # the maximum is kept exactly
    assert histogram.count == len(samples)


def test_bucket_edges_and_a_single_value():
    """Values on the edges of buckets (powers of the growth factor) and one lone sample."""
    edges = [int(LOWEST_NS * 1.02**i) for i in range(0, 900, 7)]
    histogram = histogram_of(edges)
    for p in PERCENTILES:
        assert within_error(histogram.percentile(p), exact(edges, p)), p
    lone = histogram_of([123_456])
    assert [lone.percentile(p) for p in (0, 50, 99, 100)] == [123_456] * 4  # clamped to min/max


def test_a_run_split_over_threads_merges_to_the_same_figures():
    rng = random.Random(7)
    samples = [rng.randint(2_000, 2_000_000) for _ in range(9_000)]
    merged = LatencyHistogram()
    for part in (samples[:1000], samples[1000:5000], samples[5000:]):
        merged.merge(histogram_of(part))
    assert merged.percentiles_us() == histogram_of(samples).percentiles_us()
    assert merged.count == len(samples)


def test_the_size_does_not_grow_with_the_samples():
    small, large = histogram_of([5_000] * 10), LatencyHistogram()
    rng = random.Random(3)
    for _ in range(300_000):
        large.record(rng.randint(LOWEST_NS, 10**10))
    assert large.size_bytes() == small.size_bytes() == BUCKETS * 8 < 16_384
    assert len(large.counts) == len(small.counts) == BUCKETS


def test_no_sample_gives_zeros():
    assert LatencyHistogram().percentiles_us() == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
