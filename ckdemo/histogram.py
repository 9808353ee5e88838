"""Latency percentiles in bounded memory, for every long run (bench, soak, bench-serve's clients).

Keeping every latency cost 340 MB for a 20 s `bench --op random`; a histogram of log-spaced
buckets costs the same ~9 KB after ten calls or ten billion. Bucket i holds the values in
[LOWEST_NS * GROWTH**i, LOWEST_NS * GROWTH**(i+1)); a percentile is the geometric middle of the
bucket its rank falls in, so it is within RELATIVE_ERROR of the exact percentile of the same
samples (for values in [LOWEST_NS, HIGHEST_NS]; the minimum and the maximum are kept exactly).

The rank is the one the exact figures used before: the sorted sample at min(n - 1, int(p/100 * n)).
"""

from __future__ import annotations

import math
from array import array

GROWTH = 1.02  # each bucket 2 % wider than the one before
RELATIVE_ERROR = math.sqrt(GROWTH) - 1  # 0.995 %: the middle of a bucket to either end of it
LOWEST_NS = 100  # below: the first bucket (no PKCS#11 call returns faster)
HIGHEST_NS = 10**12  # 1000 s; above: the last bucket
BUCKETS = math.ceil(math.log(HIGHEST_NS / LOWEST_NS) / math.log(GROWTH)) + 1
_PER_LOG = 1 / math.log(GROWTH)


class LatencyHistogram:
    """Latencies in nanoseconds. Not thread-safe: one per thread, then merge()."""

    __slots__ = ("counts", "count", "minimum", "maximum")

    def __init__(self) -> None:
        self.counts = array("Q", bytes(8 * BUCKETS))
        self.count = 0
        self.minimum = math.inf
        self.maximum = 0

    def record(self, ns: int) -> None:
        index = int(math.log(ns / LOWEST_NS) * _PER_LOG) if ns > LOWEST_NS else 0
        self.counts[index if index < BUCKETS else BUCKETS - 1] += 1
        self.count += 1
        if ns < self.minimum:
            self.minimum = ns
        if ns > self.maximum:
            self.maximum = ns

    def merge(self, other: "LatencyHistogram") -> None:
        for index, n in enumerate(other.counts):
            if n:
                self.counts[index] += n
        self.count += other.count
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def percentile(self, p: float) -> float:
        """The p-th percentile in nanoseconds (0.0 with no sample); p=100 is the exact maximum."""
        if not self.count:
            return 0.0
        if p >= 100:
            return float(self.maximum)
        rank = min(self.count - 1, int(p / 100 * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen > rank:
                middle = LOWEST_NS * GROWTH ** (index + 0.5)
                return float(min(max(middle, self.minimum), self.maximum))
        return float(self.maximum)  # not reached: the counts add up to count

    def percentiles_us(self) -> dict[str, float]:
        """p50, p95, p99 and max in microseconds, as the JSON reports carry them."""
        return {
            name: round(self.percentile(p) / 1000, 3)
            for name, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        }

    def size_bytes(self) -> int:
        """What the samples occupy: the same however many were recorded."""
        return self.counts.itemsize * len(self.counts)
