"""Log-sum-exp normalisation of a block's log-densities, compiled with Numba.

The E-step turns a (K, n) block of weighted log-densities into
responsibilities and per-row log-likelihoods. In NumPy that is about ten
calls per block (max, subtract, exp, sum, log, divide and the checks around
them); profiled on 2 cores they were the largest cost of the diag and
spherical kernels at small K, for two reasons:

* numpy's float64 ``exp`` is scalar on CPUs without AVX-512 (5-10 ns per
  value on the project's machines), and
* each short call takes and releases the GIL, so two Dask threads running
  such calls gain 1.1-1.5x over one instead of 2x.

:func:`normalise_in_place` does the whole normalisation in one call that
releases the GIL, with an exponential the compiler vectorises: Cody-Waite
range reduction x = n ln2 + r, |r| <= ln2 / 2, a degree-13 Taylor polynomial
for exp(r) (truncation error below 4e-18 relative) and 2^n built in the
exponent bits. Its results are within 4e-16 relative of ``np.exp``.
"""

import math

import numba
import numpy as np

_LOG2E = 1.4426950408889634
# ln 2 split so that n * _LN2_HI is exact for |n| < 2^11 (fdlibm's constants)
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# adding 1.5 * 2^52 rounds to an integer, left in the low mantissa bits
_ROUND = 6755399441055744.0
_EXPONENT_BIAS = 1023 << 52
_C = [1.0 / math.factorial(i) for i in range(14)]
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = _C[2:]

# logs of the smallest responsibilities computed exactly: exp of these is
# about the smallest normal float64 / float32 value. Below them a
# responsibility is set to zero (subnormal results slow every later product).
LOG_TINY = {"d": -708.0, "f": -87.0}


def _compiled(func):
    """Compile ``func`` without the GIL, cached on disk where numba finds a
    writable place (the package's __pycache__, the user's cache directory or
    NUMBA_CACHE_DIR); otherwise compiled again in each process."""
    options = dict(nogil=True, boundscheck=False, error_model="numpy", fastmath={"contract"})
    try:
        return numba.njit(cache=True, **options)(func)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(**options)(func)


@_compiled
def _normalise(L, tiny):
    k, n = L.shape
    top = np.empty(n)
    total = np.zeros(n)
    rounded = np.empty(n)
    rounded_bits = rounded.view(np.int64)
    scale = np.empty(n)
    scale_bits = scale.view(np.int64)
    # exp(r) in float64 whatever L's dtype, rounded once into L
    poly = np.empty(n)
    for i in range(n):
        top[i] = L[0, i]
    for c in range(1, k):
        for i in range(n):
            v = np.float64(L[c, i])
            top[i] = v if v > top[i] else top[i]
    for i in range(n):
        # a row every component gives probability 0 (or a NaN): keep -inf
        t = top[i]
        top[i] = t if t - t == 0.0 else 0.0
    for c in range(k):
        for i in range(n):
            x = np.float64(L[c, i]) - top[i]
            above = x > tiny
            # at or below tiny (-inf included): n = -1023, whose scale is
            # exactly 0; NaN goes on into r and stays NaN
            x = x if above or x != x else tiny
            kv = x * _LOG2E + _ROUND if above else _ROUND - 1023.0
            rounded[i] = kv
            nf = kv - _ROUND
            r = (x - nf * _LN2_HI) - nf * _LN2_LO
            p = _C13
            p = p * r + _C12
            p = p * r + _C11
            p = p * r + _C10
            p = p * r + _C9
            p = p * r + _C8
            p = p * r + _C7
            p = p * r + _C6
            p = p * r + _C5
            p = p * r + _C4
            p = p * r + _C3
            p = p * r + _C2
            p = p * r + 1.0
            poly[i] = p * r + 1.0
        for i in range(n):
            scale_bits[i] = (rounded_bits[i] << 52) + _EXPONENT_BIAS
        for i in range(n):
            e = poly[i] * scale[i]
            L[c, i] = e
            total[i] += e
    for i in range(n):
        t = total[i]
        total[i] = 1.0 / t
        top[i] += math.log(t)
    for c in range(k):
        for i in range(n):
            L[c, i] = L[c, i] * total[i]
    return top


def normalise_in_place(L):
    """Log-sum-exp over components (axis 0); L becomes the responsibilities.

    Parameters
    ----------
    L : ndarray (K, n), float32 or float64, C-contiguous
        Weighted log-densities of n rows; overwritten with the
        responsibilities (rounded to L's dtype; sums in float64).

    Returns
    -------
    ndarray (n,), float64
        Per-row log-likelihood log p(x) = logsumexp_k L[k]: -inf for a row
        no component can produce, NaN (and NaN responsibilities) for a row
        with a NaN log-density.
    """
    return _normalise(L, LOG_TINY[L.dtype.char])
