"""Hypothesis strategies for matmul shapes, in one place.

Sizes are bounded by :data:`MAX_DIM` so a shrunk failure stays small and the
suite stays fast. Shapes favour the awkward cases: 1, primes, and sizes that
none of the variants' split factors (4..64 and the SIMD width) divide.
"""

from __future__ import annotations

from hypothesis import strategies as st

from matmul import MatmulShape

#: Largest M, K or N drawn at random.
MAX_DIM = 96
#: Primes, which no split factor divides (and that straddle 16/32/64).
PRIMES = (2, 3, 5, 7, 11, 13, 17, 31, 37, 61, 67, 71, 89)


def dims(max_dim: int = MAX_DIM) -> st.SearchStrategy[int]:
    """One extent: 1, a prime, an odd size, or any size up to ``max_dim``."""
    return st.one_of(
        st.just(1),
        st.sampled_from([p for p in PRIMES if p <= max_dim]),
        st.integers(1, max_dim).map(lambda n: n | 1),  # odd: no power-of-two split divides it
        st.integers(1, max_dim),
    )


@st.composite
def shapes(draw, max_dim: int = MAX_DIM) -> MatmulShape:
    """A :class:`~matmul.MatmulShape` with independently drawn extents."""
    return MatmulShape(draw(dims(max_dim)), draw(dims(max_dim)), draw(dims(max_dim)))


#: Values that are not positive integers, and must be refused as extents.
bad_extents = st.one_of(
    st.integers(max_value=0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
