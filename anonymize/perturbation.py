"""Consistent perturbation: record keys, cell keys, the perturbation table and keyed noise.

Two methods keep a statistic safe when it is published again (a late export, a reprocess, an
overlapping table, another recipient): the same contributors always get the same perturbation.

**Cell key method** (ABS TableBuilder, Cantabular, tau-Argus ``cellKey``). Every person gets a
*record key*: an HMAC of the person's pseudonym under a key of the master key, reduced to an
integer below the prime ``P = 2**31 - 1``. It is derived whenever needed, never stored. A cell's
*key* is the sum of its contributors' record keys mod ``P``, divided by ``P``: a number in
[0, 1) that is the same in every table, version and run in which the cell has the same people,
and a fresh uniform one when anyone joins or leaves it. The *perturbation table* (``PTable``)
maps a cell key to a perturbation ``v`` in ``[-D, D]`` with probabilities proportional to
``exp(-v**2 / (2 sigma**2))``; the people count published is the true count plus ``v``. For
the other measures (sessions, minutes ...), whose contributions are magnitudes, the key is the
sum over the cell's people of ``rk_a + c * rk_b mod P`` (``c`` the person's contribution, in
tenths), so it changes whenever any contribution changes, and the perturbation is ``v`` times a
unit: ``magnitude_scale`` times the largest person's contribution (the ABS / Destatis method for
magnitude tables), at least 1 for counts. Two versions of a cell therefore differ by the true
change plus the difference of two perturbations, never by the true change alone.

**Keyed noise for differential privacy.** The noise of a cell is drawn by an exact sampler of the
discrete Laplace distribution (Canonne, Kamath and Steinke 2020: only integer arithmetic, no
floating-point leak as in Mironov 2012) from a stream of HMAC-SHA256 blocks seeded by the cell:
its statistic, measure, dimensions and the key of its contributions. Publishing the same data
again gives the same noisy value, so averaging versions removes nothing; changed data draws new
noise, which the release's privacy budget pays for.

>>> table = PTable(max_perturbation=2, sigma=1.0)
>>> [table.perturbation(u) for u in (0.0, 0.5, 0.999)]
[-2, 0, 2]
>>> round(table.variance, 3), round(table.p_unchanged, 3)
(0.924, 0.403)
"""

from __future__ import annotations

import hashlib
import hmac
import math
from fractions import Fraction

import polars as pl

P = 2**31 - 1  # the Mersenne prime record and cell keys are reduced by
_GOLDEN = 0.6180339887498949  # offsets the keys of the measures of one cell from each other


class PTable:
    """The perturbation table: cell key in [0, 1) -> perturbation in ``[-D, D]``.

    ``p(v)`` is proportional to ``exp(-v**2 / (2 sigma**2))``: symmetric (no bias), with the
    variance and the probability of no change given by ``variance`` and ``p_unchanged``.
    """

    def __init__(self, max_perturbation: int, sigma: float) -> None:
        self.max_perturbation = max_perturbation
        self.sigma = sigma
        values = range(-max_perturbation, max_perturbation + 1)
        weights = [math.exp(-(v * v) / (2 * sigma * sigma)) for v in values]
        total = sum(weights)
        self.probabilities = {v: w / total for v, w in zip(values, weights, strict=True)}
        # The upper edge of each perturbation's share of [0, 1), but the last.
        self.edges = [sum(self.probabilities[w] for w in values if w <= v) for v in values[:-1]]

    @property
    def variance(self) -> float:
        return sum(p * v * v for v, p in self.probabilities.items())

    @property
    def p_unchanged(self) -> float:
        return self.probabilities[0]

    def perturbation(self, u: float) -> int:
        """The perturbation of one cell key."""
        return -self.max_perturbation + sum(1 for e in self.edges if u >= e)

    def lookup(self, u: pl.Expr) -> pl.Expr:
        """The perturbations of a column of cell keys (a polars expression)."""
        expr = pl.lit(-self.max_perturbation, dtype=pl.Int64)
        for e in self.edges:
            expr = expr + (u >= e).cast(pl.Int64)
        return expr

    def describe(self) -> dict:
        """For the manifest and the datasheet: the table and its variance."""
        return {
            "method": "cell key (ABS TableBuilder / Cantabular / tau-Argus cellKey)",
            "max_perturbation": self.max_perturbation,
            "sigma": self.sigma,
            "variance": round(self.variance, 4),
            "p_unchanged": round(self.p_unchanged, 4),
            "probabilities": {str(v): round(p, 6) for v, p in self.probabilities.items()},
        }


def record_key(key: bytes, value: str) -> int:
    """A keyed record key: an integer below ``P``, the same for the same value and key.

    >>> [record_key(b"k" * 32, v) for v in ("a", "b")]
    [1539170102, 1034081655]
    """
    return int.from_bytes(hmac.new(key, value.encode(), hashlib.sha256).digest()[:8], "big") % P


def people_key() -> pl.Expr:
    """The cell key of the distinct people of a group (``__ra`` summed mod P), an integer."""
    return pl.col("__ra").sum() % P


def magnitude_key(measure: str) -> pl.Expr:
    """The cell key of the per-person contributions ``measure`` of a group, an integer.

    Changes whenever one person's contribution changes (in tenths of a unit).
    """
    c = (pl.col(measure).cast(pl.Float64).abs() * 10).round().cast(pl.Int64) % P
    return ((pl.col("__ra") + c * pl.col("__rb")) % P).sum() % P


def as_unit(key: pl.Expr, offset: int = 0) -> pl.Expr:
    """An integer cell key as a number in [0, 1), offset for the ``offset``-th measure."""
    u = key.cast(pl.Float64) / P + offset * _GOLDEN
    return u - u.floor()


# --- keyed noise for differential privacy -----------------------------------------------------


class KeyedStream:
    """Uniform random integers from HMAC-SHA256 blocks of a seed: the same seed, the same draws."""

    def __init__(self, key: bytes, seed: str) -> None:
        self._key = hmac.new(key, seed.encode(), hashlib.sha256).digest()
        self._counter = 0
        self._pool = 0
        self._bits = 0

    def _more(self) -> None:
        block = hmac.new(self._key, self._counter.to_bytes(8, "big"), hashlib.sha256).digest()
        self._counter += 1
        self._pool = (self._pool << 256) | int.from_bytes(block, "big")
        self._bits += 256

    def bits(self, n: int) -> int:
        while self._bits < n:
            self._more()
        self._bits -= n
        out = self._pool >> self._bits
        self._pool &= (1 << self._bits) - 1
        return out

    def below(self, n: int) -> int:
        """Uniform on ``0 .. n-1`` (rejection sampling: exact)."""
        if n == 1:
            return 0
        width = (n - 1).bit_length()
        while True:
            x = self.bits(width)
            if x < n:
                return x

    def bernoulli(self, p: Fraction) -> bool:
        return self.below(p.denominator) < p.numerator

    def bernoulli_exp(self, gamma: Fraction) -> bool:
        """Bernoulli(exp(-gamma)) for a rational gamma >= 0, exactly."""
        while gamma > 1:
            if not self._bernoulli_exp_01(Fraction(1)):
                return False
            gamma -= 1
        return self._bernoulli_exp_01(gamma)

    def _bernoulli_exp_01(self, gamma: Fraction) -> bool:
        k = 1
        while self.bernoulli(gamma / k):
            k += 1
        return k % 2 == 1

    def discrete_laplace(self, scale: Fraction) -> int:
        """One draw of the discrete Laplace distribution, P(x) ~ exp(-|x| / scale)
        (Canonne, Kamath and Steinke 2020, algorithm 2)."""
        t, s = scale.numerator, scale.denominator  # scale = t / s
        while True:
            u = self.below(t)
            if not self.bernoulli_exp(Fraction(u, t)):
                continue
            v = 0
            while self.bernoulli_exp(Fraction(1)):
                v += 1
            y = (u + t * v) // s
            negative = self.bernoulli(Fraction(1, 2))
            if negative and y == 0:
                continue
            return -y if negative else y


def rational_scale(scale: float) -> Fraction:
    """A rational scale no smaller than ``scale`` (more noise, never less)."""
    f = Fraction(scale).limit_denominator(1000)
    return f if f >= scale else f + Fraction(1, 1000)
