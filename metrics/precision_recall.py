"""Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour manifolds.

Precision: the share of generated samples inside the real manifold (the union of balls around each
real feature with radius = distance to its k-th nearest real neighbour); recall: the share of real
samples inside the generated manifold. Distances are computed in blocks so memory stays bounded.
"""

import torch

from metrics import metric_utils


def _kth_neighbour_radii(manifold, k, block):
    # kthvalue(k + 1): each point's distance to itself (0) comes first.
    return torch.cat([torch.cdist(part, manifold).kthvalue(k + 1, dim=1).values for part in manifold.split(block)])


def _inside(probes, manifold, radii, block):
    return torch.cat([(torch.cdist(part, manifold) <= radii.unsqueeze(0)).any(dim=1) for part in probes.split(block)])


def manifold_coverage(probes, manifold, k=3, block=10000):
    """Share of `probes` [P, d] within the k-NN manifold of `manifold` [M, d]."""
    probes, manifold = torch.as_tensor(probes, dtype=torch.float32), torch.as_tensor(manifold, dtype=torch.float32)
    if manifold.shape[0] <= k:
        raise ValueError(f'A {k}-nearest-neighbour manifold needs more than {k} samples, got {manifold.shape[0]}.')
    radii = _kth_neighbour_radii(manifold, k, block)
    return float(_inside(probes, manifold, radii, block).float().mean())


def precision_recall_from_features(real_features, gen_features, k=3, block=10000):
    return dict(precision=manifold_coverage(gen_features, real_features, k, block),
                recall=manifold_coverage(real_features, gen_features, k, block))


def compute_pr(opts, max_real, num_gen, nhood_size, row_batch_size):
    """(precision, recall) with VGG16 features (NaN on ranks other than 0). Distances are computed in
    float32 on opts.device; the official code uses float16 on the GPU, which can flip borderline cases."""
    detector_url, detector_kwargs = opts.detector_url('vgg16'), dict(return_features=True)
    real, generated = metric_utils.compute_real_and_generated_stats(opts, detector_url, detector_kwargs, max_real, num_gen,
                                                                    capture_all=True)
    real_features, gen_features = real.get_all_torch(), generated.get_all_torch()
    if opts.rank != 0:
        return float('nan'), float('nan')
    result = precision_recall_from_features(real_features.to(opts.device), gen_features.to(opts.device),
                                            k=nhood_size, block=row_batch_size)
    return result['precision'], result['recall']
