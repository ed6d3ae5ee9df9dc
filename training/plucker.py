"""The ray helpers of the official Ray Conditioning release, under their official module and names.

Official raycond2 and raycond3 networks keep `plucker_embedding` as an attribute of their synthesis
blocks / networks (`self.embedding`), so their pickles refer to the global
`training.plucker.plucker_embedding`, and their embedded module sources import it (raycond3 also
imports `two_plane_embedding` and `origin_dir_embedding`). This module provides our implementations
of those functions, on `cameras.legacy_raycond_rays` (the official, non-physical ray field: pixel
units through normalised intrinsics, transposed map):
- the no-exec loader resolves the pickles' reference to `plucker_embedding` here
  (`persistence.register_no_exec_global`), so official checkpoints load without `--trust-code`;
- a trusted load of an official pickle executes its source, whose `from training.plucker import ...`
  finds these functions.
Our own networks do not use this module; they compute their rays with `cameras.plucker_map`.
"""

import torch

from torch_utils import persistence
from training import cameras


def get_rays(H, W, intrinsics, c2w, jitter=False):
    """(origins, directions), each [B, H*W, 3], flattened x-major as the official function returns them."""
    origins, dirs = cameras.legacy_raycond_rays(c2w, intrinsics, H, W, jitter=jitter)
    return origins.reshape(origins.shape[0], H * W, 3), dirs.reshape(dirs.shape[0], H * W, 3)


def plucker_embedding(H, W, intrinsics, c2w, jitter=False):
    """[B, 6, H, W]: unit direction d and moment o x d of the official ray field."""
    origins, dirs = cameras.legacy_raycond_rays(c2w, intrinsics, H, W, jitter=jitter)
    return cameras.plucker(origins, dirs).permute(0, 3, 1, 2)


def origin_dir_embedding(H, W, intrinsics, c2w, jitter=False):
    """[B, 6, H, W]: origin o and unit direction d of the official ray field."""
    origins, dirs = cameras.legacy_raycond_rays(c2w, intrinsics, H, W, jitter=jitter)
    return torch.cat([origins, dirs], dim=-1).permute(0, 3, 1, 2)


def two_plane_embedding(H, W, intrinsics, c2w, jitter=False):
    """Imported by the official raycond3 module but called by none of its networks; not reproduced here."""
    raise NotImplementedError('two_plane_embedding is imported by the official Ray Conditioning code but used by '
                              'none of its networks, so this codebase does not reproduce it; use plucker_embedding.')


persistence.register_no_exec_global('training.plucker', 'plucker_embedding', plucker_embedding)
