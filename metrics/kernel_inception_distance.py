"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel.

k(x, y) = (x.y / d + 1)^3. Over `num_subsets` random subsets of m = min(n_gen, n_real, max_subset_size)
samples from each set, the unbiased estimator
    1/(m(m-1)) sum_{i!=j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m^2 sum_{i,j} k(x_i, y_j)
is averaged, as NVIDIA's metric does (100 subsets of at most 1000).
"""

import numpy as np

from metrics import metric_utils


def polynomial_kernel(x, y):
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x, y):
    """Unbiased MMD^2 estimate between equally sized samples x, y [m, d] (float64)."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid_from_features(gen_features, real_features, num_subsets=100, max_subset_size=1000, seed=None):
    """Mean unbiased MMD^2 over random subsets drawn without replacement (seeded by `seed`)."""
    gen_features = np.asarray(gen_features, dtype=np.float64)
    real_features = np.asarray(real_features, dtype=np.float64)
    m = min(gen_features.shape[0], real_features.shape[0], max_subset_size)
    if m < 2:
        raise ValueError('KID needs at least 2 samples in each set.')
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen_features[rng.choice(gen_features.shape[0], m, replace=False)]
        y = real_features[rng.choice(real_features.shape[0], m, replace=False)]
        total += mmd2_unbiased(x, y)
    return total / num_subsets


def compute_kid(opts, max_real, num_gen, num_subsets, max_subset_size):
    """KID between up to `max_real` dataset images and `num_gen` generated ones (NaN on ranks other than 0)."""
    detector_url, detector_kwargs = opts.detector_url('inception'), dict(return_features=True)
    real, generated = metric_utils.compute_real_and_generated_stats(opts, detector_url, detector_kwargs, max_real, num_gen,
                                                                    capture_all=True)
    real_features, gen_features = real.get_all(), generated.get_all()
    if opts.rank != 0:
        return float('nan')
    return kid_from_features(gen_features, real_features, num_subsets, max_subset_size, seed=opts.seed)
