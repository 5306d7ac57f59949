"""Small Hadamard matrices for the fast Hadamard transform of size ``n = K * 2**m``.

A Hadamard matrix of order ``k`` has entries +-1 and satisfies ``H @ H.T == k * I``.
The fast transform of length ``n = k * p`` (``p`` a power of two) applies the dense
matrix ``kron(H_k, H_p)``: a dense ``k x k`` multiply on one axis and the ``O(log p)``
butterfly of the Sylvester matrix ``H_p`` on the other.  This module builds ``H_k``
for every small order ``k <= 256`` it knows how to construct, in pure numpy:

* **Sylvester doubling** (Sylvester 1867): ``H_1 = [1]``, ``H_2k = [[H, H], [H, -H]]``.
* **Paley I** (Paley 1933): order ``q + 1`` for a prime ``q = 3 (mod 4)``.
* **Paley II** (Paley 1933): order ``2 (q + 1)`` for a prime ``q = 1 (mod 4)``.
* **Williamson** (Williamson 1944): order ``4 w`` from four symmetric circulant +-1
  matrices ``A, B, C, D`` of odd order ``w`` with ``A^2 + B^2 + C^2 + D^2 = 4 w I``.
  The first rows for ``w`` in ``{13, 23, 25, 29, 39, 43}`` were found by the exhaustive
  meet-in-the-middle search in ``tools/williamson/`` (``w = 43`` gives order 172, which no
  Paley construction over a prime field reaches).
* **Kronecker products** ``kron(H_a, H_b)`` of supported orders (``kron(H_2, H_a)`` is
  Sylvester doubling).

``SUPPORTED_FACTORS`` is the closure, up to 256, of ``{1, 2}`` together with the Paley I,
Paley II and Williamson orders under products of two supported orders.  Every order is
``1``, ``2`` or a multiple of 4, and a factor ``o * 2**j`` (``o`` odd) brings in all of
``o * 2**i`` for ``i >= j``.  Products of two orders ``> 2`` add nothing new below 256
(``144 = 4 * 36`` and ``240 = 4 * 60`` are also doublings), but the rule is kept general.

References:
    J. J. Sylvester, "Thoughts on inverse orthogonal matrices ...", Phil. Mag. 34 (1867).
    R. E. A. C. Paley, "On orthogonal matrices", J. Math. Phys. 12 (1933) 311-320.
    J. Williamson, "Hadamard's determinant theorem and the sum of four squares",
    Duke Math. J. 11 (1944) 65-81.
    W. H. Holzmann, H. Kharaghani, B. Tayfeh-Rezaie, "Williamson matrices up to order 59",
    Des. Codes Cryptogr. 46 (2008) 343-352.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np
import numpy.typing as npt

__all__ = [
    "SUPPORTED_FACTORS",
    "MAX_FACTOR",
    "base_hadamard",
    "factor_size",
    "hadamard_matrix_numpy",
    "kronecker",
    "paley_i",
    "paley_ii",
    "sylvester",
    "williamson",
    "williamson_circulants",
]

IntMatrix = npt.NDArray[np.int8]

#: Largest base order this module constructs.
MAX_FACTOR = 256

# First rows (index 0..w-1, symmetric: row[j] == row[w - j]) of Williamson circulants
# A, B, C, D of order w, found by tools/williamson/williamson_search.c (exhaustive for
# w = 43: 278 s on 2 cores) and checked by tests/test_hadamard_constructions.py.
_WILLIAMSON_ROWS: dict[int, tuple[str, str, str, str]] = {
    13: ("+-+--++++--+-", "+++-+----+-++", "+-++--++--++-", "+-----++-----"),
    23: (
        "++---+-+-++++++-+-+---+",
        "+-++-+++--+--+--+++-++-",
        "+++-+--++++--++++--+-++",
        "+++--+---+----+---+--++",
    ),
    25: (
        "+-+---+-++-++++-++-+---+-",
        "+--++++-+-+----+-+-++++--",
        "++----+--+--++--+--+----+",
        "+------+++--++--+++------",
    ),
    29: (
        "+--++----+-++++++++-+----++--",
        "++--++-+-++++----++++-+-++--+",
        "+--+---+-+--++++++--+-+---+--",
        "+-+++-+++--+-++++-+--+++-+++-",
    ),
    39: (
        "+-++------++--+-+-++++-+-+--++------++-",
        "++--+++-+--++-+----------+-++--+-+++--+",
        "+---+--++++----+-+-++-+-+----++++--+---",
        "+---+---+-++-++----++----++-++-+---+---",
    ),
    43: (
        "++---+-+--++--+---++++++++---+--++--+-+---+",
        "+------++-+---++++-++--++-++++---+-++------",
        "+----++++-+--+--+-+--++--+-+--+--+-++++----",
        "+-++++--++--+-+-+-++++++++-+-+-+--++--++++-",
    ),
}


def _is_prime(q: int) -> bool:
    """Trial-division primality test for small ``q``."""
    if q < 2:
        return False
    return all(q % d for d in range(2, int(q**0.5) + 1))


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _jacobsthal(q: int) -> npt.NDArray[np.int64]:
    """Jacobsthal matrix ``Q[i, j] = chi(j - i)`` of the prime field GF(q).

    ``chi`` is the quadratic character: 0 at 0, +1 on nonzero squares, -1 otherwise.
    ``Q`` is symmetric for ``q = 1 (mod 4)`` and antisymmetric for ``q = 3 (mod 4)``;
    ``Q Q^T = q I - J`` and every row sums to 0.
    """
    chi = -np.ones(q, dtype=np.int64)
    chi[0] = 0
    chi[np.unique((np.arange(1, q) ** 2) % q)] = 1
    idx = np.arange(q)
    return chi[(idx[None, :] - idx[:, None]) % q]


def sylvester(n: int) -> IntMatrix:
    """Sylvester Hadamard matrix of order ``n`` (a power of two), as int8.

    Construction: ``H_1 = [1]``, ``H_2k = [[H_k, H_k], [H_k, -H_k]]`` (Sylvester 1867), so
    ``H_n[i, j] = (-1) ** popcount(i & j)``.

    Args:
        n: Order, a positive power of two.

    Returns:
        The ``n x n`` int8 matrix (a fresh, writeable array).

    Raises:
        ValueError: If ``n`` is not a positive power of two.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not _is_power_of_two(int(n)):
        raise ValueError(f"Sylvester order must be a positive power of two, got {n!r}")
    h = np.ones((1, 1), dtype=np.int8)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def paley_i(q: int) -> IntMatrix:
    """Paley construction I: Hadamard matrix of order ``q + 1``, ``q = 3 (mod 4)`` prime.

    With the (antisymmetric) Jacobsthal matrix ``Q`` of GF(q), the matrix
    ``S = [[0, 1^T], [-1, Q]]`` is skew with ``S S^T = q I``, hence
    ``H = I + S`` satisfies ``H H^T = (I + S)(I - S) = I + S S^T = (q + 1) I``
    (Paley 1933).

    Args:
        q: A prime with ``q % 4 == 3``.

    Returns:
        The ``(q + 1) x (q + 1)`` int8 Hadamard matrix.
    """
    if not (_is_prime(q) and q % 4 == 3):
        raise ValueError(f"Paley I needs a prime q = 3 (mod 4), got {q}")
    s = np.zeros((q + 1, q + 1), dtype=np.int64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = _jacobsthal(q)
    return (np.eye(q + 1, dtype=np.int64) + s).astype(np.int8)


def paley_ii(q: int) -> IntMatrix:
    """Paley construction II: Hadamard matrix of order ``2 (q + 1)``, ``q = 1 (mod 4)`` prime.

    With the (symmetric) Jacobsthal matrix ``Q`` of GF(q), ``C = [[0, 1^T], [1, Q]]`` is a
    symmetric conference matrix (``C C^T = q I``, zero diagonal) and
    ``H = kron(C, [[1, 1], [1, -1]]) + kron(I, [[1, -1], [-1, -1]])`` is Hadamard
    (Paley 1933).

    Args:
        q: A prime with ``q % 4 == 1``.

    Returns:
        The ``2(q + 1) x 2(q + 1)`` int8 Hadamard matrix.
    """
    if not (_is_prime(q) and q % 4 == 1):
        raise ValueError(f"Paley II needs a prime q = 1 (mod 4), got {q}")
    c = np.zeros((q + 1, q + 1), dtype=np.int64)
    c[0, 1:] = 1
    c[1:, 0] = 1
    c[1:, 1:] = _jacobsthal(q)
    h = np.kron(c, [[1, 1], [1, -1]]) + np.kron(np.eye(q + 1, dtype=np.int64), [[1, -1], [-1, -1]])
    return h.astype(np.int8)


def _circulant(row: npt.ArrayLike) -> IntMatrix:
    """Circulant matrix with first row ``row``: ``M[i, j] = row[(j - i) mod w]``."""
    r = np.asarray(row, dtype=np.int8)
    w = r.shape[0]
    idx = np.arange(w)
    return r[(idx[None, :] - idx[:, None]) % w]


def williamson_circulants(w: int) -> tuple[IntMatrix, IntMatrix, IntMatrix, IntMatrix]:
    """The four symmetric circulant Williamson matrices ``A, B, C, D`` of order ``w``.

    They satisfy ``A^2 + B^2 + C^2 + D^2 = 4 w I``.  The first rows are stored constants
    found by the computer search in ``tools/williamson/``.

    Args:
        w: An odd order in the stored table (13, 23, 25, 29, 39 or 43).

    Returns:
        ``(A, B, C, D)`` as ``w x w`` int8 matrices.
    """
    if w not in _WILLIAMSON_ROWS:
        raise ValueError(f"no stored Williamson matrices of order {w}; have {sorted(_WILLIAMSON_ROWS)}")
    mats = tuple(_circulant([1 if ch == "+" else -1 for ch in row]) for row in _WILLIAMSON_ROWS[w])
    return mats  # type: ignore[return-value]


def williamson(w: int) -> IntMatrix:
    """Williamson construction: Hadamard matrix of order ``4 w``.

    With symmetric (hence pairwise commuting) circulants ``A, B, C, D`` of order ``w``
    and ``A^2 + B^2 + C^2 + D^2 = 4 w I``, the Williamson array
    ``[[A, B, C, D], [-B, A, -D, C], [-C, D, A, -B], [-D, -C, B, A]]``
    is a Hadamard matrix (Williamson 1944).

    Args:
        w: Odd order with stored Williamson matrices (see ``williamson_circulants``).

    Returns:
        The ``4w x 4w`` int8 Hadamard matrix.
    """
    a, b, c, d = williamson_circulants(w)
    return np.block([[a, b, c, d], [-b, a, -d, c], [-c, d, a, -b], [-d, -c, b, a]]).astype(np.int8)


def kronecker(h1: npt.ArrayLike, h2: npt.ArrayLike) -> IntMatrix:
    """Kronecker product of two Hadamard matrices, a Hadamard matrix of the product order.

    ``(H1 x H2)(H1 x H2)^T = (H1 H1^T) x (H2 H2^T) = k1 k2 I`` (Sylvester 1867);
    ``kronecker(H_2, H)`` with ``H_2 = [[1, 1], [1, -1]]`` is Sylvester doubling.

    Args:
        h1: Hadamard matrix of order ``k1``.
        h2: Hadamard matrix of order ``k2``.

    Returns:
        ``kron(h1, h2)`` as an int8 matrix of order ``k1 * k2``.
    """
    return np.kron(np.asarray(h1, dtype=np.int8), np.asarray(h2, dtype=np.int8)).astype(np.int8)


def _build_recipes(limit: int) -> dict[int, tuple]:
    """Map every constructible order ``<= limit`` to its (first-choice) construction.

    Priority: Sylvester for powers of two, then Paley I, Paley II, Williamson, and
    finally a Kronecker product ``a * b`` of smaller supported orders (``a = 2``, i.e.
    doubling, preferred; otherwise the smallest ``a > 2``).
    """
    recipes: dict[int, tuple] = {}
    k = 1
    while k <= limit:
        recipes[k] = ("sylvester", k)
        k *= 2
    for q in range(3, limit):
        if _is_prime(q) and q % 4 == 3 and q + 1 <= limit:
            recipes.setdefault(q + 1, ("paley_i", q))
    for q in range(5, limit):
        if _is_prime(q) and q % 4 == 1 and 2 * (q + 1) <= limit:
            recipes.setdefault(2 * (q + 1), ("paley_ii", q))
    for w in sorted(_WILLIAMSON_ROWS):
        if 4 * w <= limit:
            recipes.setdefault(4 * w, ("williamson", w))
    for k in range(4, limit + 1):  # ascending, so both factors are already final
        if k in recipes:
            continue
        for a in range(2, int(k**0.5) + 1):
            if k % a == 0 and a in recipes and k // a in recipes:
                recipes[k] = ("kronecker", a, k // a)
                break
    return recipes


_RECIPES = _build_recipes(MAX_FACTOR)

#: Every base order ``k <= 256`` with a construction here, ascending.
SUPPORTED_FACTORS: tuple[int, ...] = tuple(sorted(_RECIPES))


@functools.cache
def base_hadamard(k: int) -> IntMatrix:
    """Hadamard matrix of the supported order ``k``, as a cached read-only int8 array.

    Args:
        k: An order in ``SUPPORTED_FACTORS``.

    Returns:
        A read-only ``k x k`` int8 matrix with ``H @ H.T == k * I``.

    Raises:
        ValueError: If ``k`` is not in ``SUPPORTED_FACTORS``.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) not in _RECIPES:
        raise ValueError(f"no Hadamard construction of order k={k!r}; supported: {SUPPORTED_FACTORS}")
    recipe = _RECIPES[int(k)]
    kind = recipe[0]
    if kind == "sylvester":
        h = sylvester(recipe[1])
    elif kind == "paley_i":
        h = paley_i(recipe[1])
    elif kind == "paley_ii":
        h = paley_ii(recipe[1])
    elif kind == "williamson":
        h = williamson(recipe[1])
    else:
        h = kronecker(base_hadamard(recipe[1]), base_hadamard(recipe[2]))
    h = np.ascontiguousarray(h, dtype=np.int8)
    h.flags.writeable = False
    return h


def _check_int(n: object, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(n).__name__} ({n!r})")
    return int(n)


def factor_size(n: int) -> tuple[int, int]:
    """Split a transform size into ``n = k * p`` with the smallest supported ``k``.

    ``p`` is a power of two and ``k`` is the smallest order in ``SUPPORTED_FACTORS`` with
    ``n / k`` a power of two (the dense ``k`` part costs ``k`` multiply-adds per element,
    so a small ``k`` is faster), e.g. ``40 * 2**m -> (20, 2**(m + 1))``.

    Args:
        n: Transform size, a positive int.

    Returns:
        ``(k, p)`` with ``k * p == n``.

    Raises:
        TypeError: If ``n`` is a bool or not an integer.
        ValueError: If ``n`` is not positive or has no construction (never padded).
    """
    n = _check_int(n)
    # Memoized in a plain dict: every op call asks, and the scan over SUPPORTED_FACTORS costs more than a small
    # transform. (Not functools.lru_cache: torch.compile traces through it, and warns that it does.)
    found = _FACTOR_CACHE.get(n)
    if found is None:
        found = _factor_size(n)
        if len(_FACTOR_CACHE) < 4096:
            _FACTOR_CACHE[n] = found
    return found


_FACTOR_CACHE: dict[int, tuple[int, int]] = {}


def _factor_size(n: int) -> tuple[int, int]:
    supported = f"supported sizes are K·2^m for K in {SUPPORTED_FACTORS}"
    if n <= 0:
        raise ValueError(f"no Hadamard construction for n={n}: n must be positive; {supported}")
    odd, m = n, 0
    while odd % 2 == 0:
        odd //= 2
        m += 1
    for k in SUPPORTED_FACTORS:
        if n % k == 0 and _is_power_of_two(n // k):
            return k, n // k
    raise ValueError(f"no Hadamard construction for n={n} (= {odd}·2^{m}): {supported}")


def hadamard_matrix_numpy(n: int) -> npt.NDArray[np.float64]:
    """Dense unnormalised Hadamard matrix of size ``n``, as used by the fast transform.

    Equal to ``numpy.kron(base_hadamard(k), sylvester(p))`` with
    ``(k, p) = factor_size(n)`` (in that order: row element ``a * p + b`` pairs row ``a``
    of ``H_k`` with row ``b`` of ``H_p``).  Meant for tests and small ``n``: it allocates
    ``n * n`` float64 values.

    Args:
        n: Transform size accepted by ``factor_size``.

    Returns:
        The ``n x n`` float64 matrix with entries +-1 and ``H @ H.T == n * I``.
    """
    k, p = factor_size(n)
    return np.kron(base_hadamard(k).astype(np.float64), sylvester(p).astype(np.float64))
