"""Tests for tcompress.hadamard.constructions (pure numpy, no native code needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tcompress.hadamard.constructions import (
    SUPPORTED_FACTORS,
    base_hadamard,
    factor_size,
    hadamard_matrix_numpy,
    paley_i,
    paley_ii,
    sylvester,
    williamson,
    williamson_circulants,
)

POWERS_OF_TWO = tuple(1 << i for i in range(9))  # 1 .. 256
REQUIRED = POWERS_OF_TWO + (12, 20, 28, 36, 40, 60, 108, 148, 172)
# smallest supported K for each odd part that occurs in REQUIRED (checked independently of the module)
MIN_K_FOR_ODD = {1: 1, 3: 12, 5: 20, 7: 28, 9: 36, 15: 60, 27: 108, 37: 148, 43: 172}
# odd parts with no construction at any K <= 256: 47 (no Williamson matrices of order 47 exist, 187 and 93
# are not prime), 59, 61
UNSUPPORTED_ODD = (47, 59, 61)


def _odd_part(n: int) -> tuple[int, int]:
    m = 0
    while n % 2 == 0:
        n //= 2
        m += 1
    return n, m


def _assert_hadamard(h: np.ndarray, k: int) -> None:
    assert h.shape == (k, k)
    assert np.isin(h, (-1, 1)).all()
    hi = h.astype(np.int64)
    np.testing.assert_array_equal(hi @ hi.T, k * np.eye(k, dtype=np.int64))


def test_supported_factors_sorted_and_complete() -> None:
    assert list(SUPPORTED_FACTORS) == sorted(set(SUPPORTED_FACTORS))
    assert set(REQUIRED) <= set(SUPPORTED_FACTORS)
    assert max(SUPPORTED_FACTORS) <= 256
    for k in SUPPORTED_FACTORS:
        assert k in (1, 2) or k % 4 == 0
        if 2 * k <= 256:
            assert 2 * k in SUPPORTED_FACTORS  # closed under doubling
    for odd in UNSUPPORTED_ODD:
        assert not any(k % odd == 0 for k in SUPPORTED_FACTORS)


@pytest.mark.parametrize("k", SUPPORTED_FACTORS)
def test_base_hadamard_is_hadamard(k: int) -> None:
    h = base_hadamard(k)
    assert h.dtype == np.int8
    _assert_hadamard(h, k)
    assert not h.flags.writeable
    assert base_hadamard(k) is h  # cached


def test_base_hadamard_read_only() -> None:
    with pytest.raises(ValueError):
        base_hadamard(12)[0, 0] = 0


@pytest.mark.parametrize("k", (3, 6, 188, 512, 0, -4))
def test_base_hadamard_rejects_unsupported(k: int) -> None:
    with pytest.raises(ValueError, match="supported"):
        base_hadamard(k)


@pytest.mark.parametrize("q", (3, 7, 11, 19, 23, 31, 43, 47, 59, 67, 251))
def test_paley_i(q: int) -> None:
    _assert_hadamard(paley_i(q), q + 1)


@pytest.mark.parametrize("q", (5, 13, 17, 29, 37, 41, 53, 113))
def test_paley_ii(q: int) -> None:
    _assert_hadamard(paley_ii(q), 2 * (q + 1))


@pytest.mark.parametrize("q", (1, 9, 15, 21))
def test_paley_rejects_non_primes(q: int) -> None:
    with pytest.raises(ValueError):
        paley_i(q)
    with pytest.raises(ValueError):
        paley_ii(q)


@pytest.mark.parametrize("n", (1, 2, 4, 8, 64, 1024))
def test_sylvester(n: int) -> None:
    h = sylvester(n)
    _assert_hadamard(h, n)
    i = np.arange(n)
    bits = np.vectorize(lambda v: bin(v).count("1"))(i[:, None] & i[None, :])
    np.testing.assert_array_equal(h, (-1) ** bits)


@pytest.mark.parametrize("w", (13, 23, 25, 29, 39, 43))
def test_williamson_circulants(w: int) -> None:
    mats = williamson_circulants(w)
    total = np.zeros((w, w), dtype=np.int64)
    for m in mats:
        assert m.shape == (w, w)
        assert np.isin(m, (-1, 1)).all()
        np.testing.assert_array_equal(m, m.T)  # symmetric
        np.testing.assert_array_equal(m, np.roll(np.roll(m, 1, axis=0), 1, axis=1))  # circulant
        mi = m.astype(np.int64)
        total += mi @ mi
    np.testing.assert_array_equal(total, 4 * w * np.eye(w, dtype=np.int64))
    _assert_hadamard(williamson(w), 4 * w)


def test_order_172_is_williamson_43() -> None:
    np.testing.assert_array_equal(base_hadamard(172), williamson(43))


REAL_MODEL_SIZES = {
    40 * 8: (20, 16),
    768: (12, 64),
    4096: (1, 4096),
    14336: (28, 512),
    11008: (172, 64),
    13824: (108, 128),
    576: (36, 16),
    18944: (148, 128),
}


@pytest.mark.parametrize("n,expected", sorted(REAL_MODEL_SIZES.items()))
def test_factor_size_real_models(n: int, expected: tuple[int, int]) -> None:
    assert factor_size(n) == expected


def test_factor_size_required_grid() -> None:
    for k in REQUIRED:
        for m in range(10):
            n = k << m
            if n > 1 << 17:
                continue
            odd, _ = _odd_part(n)
            want = MIN_K_FOR_ODD[odd]
            assert factor_size(n) == (want, n // want), n
    assert factor_size(40) == (20, 2)
    assert factor_size(40 << 5) == (20, 64)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SUPPORTED_FACTORS), st.integers(min_value=0, max_value=20))
def test_factor_size_property(k: int, m: int) -> None:
    n = k << m
    k2, p = factor_size(n)
    assert k2 * p == n
    assert k2 in SUPPORTED_FACTORS
    assert k2 <= k
    assert p & (p - 1) == 0
    # k2 is the smallest: no smaller supported factor gives a power-of-two quotient
    for small in SUPPORTED_FACTORS:
        if small >= k2:
            break
        assert n % small != 0 or (n // small) & (n // small - 1) != 0


@pytest.mark.parametrize(
    "n", (12, 20, 28, 36, 40, 60, 108, 148, 172, 576, 768, 1536) + tuple(1 << m for m in range(11))
)
def test_hadamard_matrix_numpy(n: int) -> None:
    h = hadamard_matrix_numpy(n)
    assert h.dtype == np.float64
    assert h.shape == (n, n)
    assert np.isin(h, (-1.0, 1.0)).all()
    np.testing.assert_array_equal(h @ h.T, n * np.eye(n))
    k, p = factor_size(n)
    np.testing.assert_array_equal(h, np.kron(base_hadamard(k), sylvester(p)))


def test_hadamard_matrix_numpy_kron_order() -> None:
    # row a*p + b of kron(H_k, H_p) is H_k[a, :] (x) H_p[b, :]
    h = hadamard_matrix_numpy(48)  # k=12, p=4
    hk, hp = base_hadamard(12), sylvester(4)
    for a, b in ((0, 0), (3, 1), (11, 3)):
        np.testing.assert_array_equal(h[a * 4 + b], np.outer(hk[a], hp[b]).ravel())


@pytest.mark.parametrize(
    "n,fragment",
    [
        (0, "n=0"),
        (-4, "n=-4"),
        (7, "n=7 (= 7·2^0)"),
        (6, "n=6 (= 3·2^1)"),
        (188, "n=188 (= 47·2^2)"),
        (188 << 6, "n=12032 (= 47·2^8)"),
        (236 * 4, "n=944 (= 59·2^4)"),
        (61 << 10, "n=62464 (= 61·2^10)"),
    ],
)
def test_factor_size_rejects_unsupported(n: int, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        factor_size(n)
    msg = str(info.value)
    assert fragment in msg
    assert str(SUPPORTED_FACTORS) in msg
    with pytest.raises(ValueError):
        hadamard_matrix_numpy(n)


@pytest.mark.parametrize("bad,type_name", [(3.0, "float"), (True, "bool"), ("12", "str"), (None, "NoneType")])
def test_factor_size_rejects_non_int(bad: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=type_name):
        factor_size(bad)  # type: ignore[arg-type]


def test_factor_size_accepts_numpy_int() -> None:
    assert factor_size(np.int64(768)) == (12, 64)
