"""Which spatial positions become PCA samples: every position of a conv map is one sample, and
at most ``samples`` of them are drawn per layer, spread evenly over the images.

Image ``g`` of ``n_images`` contributes ``quota[g]`` positions (``samples // n_images``, one more for
the first ``samples % n_images`` images, never more than it has), drawn without replacement from
``numpy.random.default_rng([seed, g])``: the positions of an image do not depend on the batch
size or on the other images, and pre and post sites of a layer use the same positions.
When ``n_images * positions <= samples`` every position is used.
"""

from __future__ import annotations

import numpy as np


def quotas(*, n_images: int, n_positions: int, samples: int) -> np.ndarray:
    """Positions drawn from each image, ``(n_images,)`` int64."""
    if n_images * n_positions <= samples:
        return np.full(n_images, n_positions, dtype=np.int64)
    base, extra = divmod(samples, n_images)
    q = np.full(n_images, base, dtype=np.int64)
    q[:extra] += 1
    return np.minimum(q, n_positions)


def positions(*, image: int, n_positions: int, quota: int, seed: int) -> np.ndarray:
    """Sorted flat position indices (row-major over the map) drawn from image ``image``."""
    if quota >= n_positions:
        return np.arange(n_positions)
    rng = np.random.default_rng([seed, image])
    return np.sort(rng.choice(n_positions, size=quota, replace=False))
