"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over splits, as NVIDIA's is50k.

The class probabilities are the detector's softmax without the output bias (`no_output_bias=True`).
"""

import numpy as np

from metrics import metric_utils


def inception_score_from_probs(probs, num_splits=10):
    """(mean, std) of the score over `num_splits` consecutive equal parts of probs [N, classes]."""
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[0]
    if n < num_splits:
        raise ValueError(f'The Inception Score over {num_splits} splits needs at least {num_splits} samples, got {n}.')
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part) - np.log(marginal))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts, num_gen, num_splits):
    """(mean, std) Inception Score of `num_gen` generated images (NaN on ranks other than 0)."""
    detector_url, detector_kwargs = opts.detector_url('inception'), dict(no_output_bias=True)
    probs = metric_utils.compute_feature_stats_for_generator(
        opts, detector_url, detector_kwargs, capture_all=True, max_items=num_gen).get_all()
    if opts.rank != 0:
        return float('nan'), float('nan')
    return inception_score_from_probs(probs, num_splits)
