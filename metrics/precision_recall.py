"""Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour manifolds.

Precision: the share of generated samples inside the real manifold (the union of balls around each
real feature with radius = distance to its k-th nearest real neighbour); recall: the share of real
samples inside the generated manifold. Distances are computed in blocks so memory stays bounded.
"""

import torch


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
