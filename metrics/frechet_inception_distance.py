"""Fréchet Inception Distance (Heusel et al. 2017), with NVIDIA's statistics conventions.

FID = |mu_g - mu_r|^2 + tr(S_g + S_r - 2 (S_g S_r)^(1/2)). The trace of the matrix square root is
computed from eigenvalues in float64: S_r^(1/2) S_g S_r^(1/2) is symmetric positive semi-definite and
has the eigenvalues of S_g S_r, so tr((S_g S_r)^(1/2)) is the sum of the square roots of its
eigenvalues. This does not depend on `scipy.linalg.sqrtm`, whose behaviour changed between SciPy
versions (huge imaginary parts in 1.11-1.12, `disp=` removed in 1.18).
"""

import numpy as np

from metrics import metric_utils


def _psd_sqrt(matrix):
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma_a, sigma_b):
    """tr((sigma_a sigma_b)^(1/2)) for symmetric positive semi-definite matrices, in float64."""
    sigma_a = np.asarray(sigma_a, dtype=np.float64)
    sigma_b = np.asarray(sigma_b, dtype=np.float64)
    root_b = _psd_sqrt((sigma_b + sigma_b.T) / 2)
    middle = root_b @ sigma_a @ root_b
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def fid_from_stats(mu_gen, sigma_gen, mu_real, sigma_real):
    """FID between two Gaussians given by their means and covariances."""
    mu_gen, mu_real = np.asarray(mu_gen, dtype=np.float64), np.asarray(mu_real, dtype=np.float64)
    sigma_gen, sigma_real = np.asarray(sigma_gen, dtype=np.float64), np.asarray(sigma_real, dtype=np.float64)
    mean_term = float(np.square(mu_gen - mu_real).sum())
    return mean_term + float(np.trace(sigma_gen) + np.trace(sigma_real)) - 2 * trace_sqrt_product(sigma_gen, sigma_real)


def compute_fid(opts, max_real, num_gen):
    """FID between up to `max_real` dataset images and `num_gen` generated ones (NaN on ranks other than 0)."""
    detector_url, detector_kwargs = opts.detector_url('inception'), dict(return_features=True)
    real, generated = metric_utils.compute_real_and_generated_stats(opts, detector_url, detector_kwargs, max_real, num_gen,
                                                                    capture_mean_cov=True)
    (mu_real, sigma_real), (mu_gen, sigma_gen) = real.get_mean_cov(), generated.get_mean_cov()
    if opts.rank != 0:
        return float('nan')
    return fid_from_stats(mu_gen, sigma_gen, mu_real, sigma_real)
