"""Shape buckets: pad array sizes up to a few fixed values so compiled code is reused.

A dataset with 37 observations per subject and one with 41 both pad to 48, so the
second reuses the first one's compiled likelihood. Sizes are 2**k and 1.5 * 2**k
(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, ...): padding wastes at most a third.
"""

from __future__ import annotations

import math


def bucket_size(n: int, minimum: int = 1) -> int:
    """Smallest bucket size >= ``max(n, minimum)``.

    Examples
    --------
    >>> [bucket_size(n) for n in (0, 1, 5, 7, 13, 33, 100)]
    [1, 1, 6, 8, 16, 48, 128]
    """
    n = max(int(n), int(minimum), 1)
    if n <= 4:
        return n if n != 3 else 3
    k = math.floor(math.log2(n))
    for size in (2**k, 3 * 2 ** (k - 1), 2 ** (k + 1)):
        if size >= n:
            return size
    return 2 ** (k + 1)  # pragma: no cover
