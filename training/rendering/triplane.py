"""Tri-plane feature sampling, following EG3D (eg3d/training/volumetric_rendering/renderer.py).

Verified in the official code (read from NVlabs/eg3d, commit 2cd2cf2):
- `generate_planes()` returns three 3x3 matrices: identity [[1,0,0],[0,1,0],[0,0,1]];
  [[1,0,0],[0,0,1],[0,1,0]]; and [[0,0,1],[1,0,0],[0,1,0]];
- `project_onto_planes` multiplies the row-vector coordinates by the *inverse* of each matrix
  (coords @ inv(P)) and keeps the first two components. Because of the inverse the three planes
  read (x, y), (x, z) and (z, x) as (grid x = width, grid y = height) - the third plane is ZX, not
  YZ, so the y axis only enters through plane 0 (known quirk, eg3d issues #30/#53/#67/#89). This
  module keeps exactly that projection, so official tri-planes are read the same way;
- `sample_from_planes` first scales coordinates by 2 / box_warp (so the cube of side box_warp maps
  to [-1, 1]^3), views features [N, 3, C, H, W] as [N * 3, C, H, W], calls
  grid_sample(mode, padding_mode='zeros' (asserted), align_corners=False) with a [N * 3, 1, M, 2]
  grid, and permutes/reshapes the result to [N, 3, M, C].
Deviation: EG3D casts the grid to float32 (`.float()`); here the grid keeps the feature dtype, so
float64 works too (identical for float32 inputs).
"""

import torch

# ----------------------------------------------------------------------------------------------


def generate_planes(device='cpu', dtype=torch.float32):
    """EG3D's plane axes: [3, 3, 3] (see the module docstring for the matrices)."""
    return torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                         [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                         [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], device=device, dtype=dtype)


def project_onto_planes(planes, coordinates):
    """Project points onto planes as EG3D: coordinates [N, M, 3], planes [P, 3, 3] -> [N, P, M, 2].

    The 2D coordinates are (coordinates @ inv(planes[p]))[..., :2]; for generate_planes() these
    are (x, y), (x, z) and (z, x). (EG3D returns the same values flattened to [N * P, M, 2].)
    """
    planes = planes.to(device=coordinates.device, dtype=coordinates.dtype)
    inv_planes = torch.linalg.inv(planes)
    projections = torch.einsum('nmi,pij->npmj', coordinates, inv_planes)
    return projections[..., :2]


def sample_from_planes(plane_features, coordinates, box_warp, plane_axes=None, mode='bilinear',
                       padding_mode='zeros'):
    """Bilinearly sample tri-plane features at 3D points, as EG3D's sample_from_planes.

    plane_features: [N, 3, C, H, W]; coordinates: [N, M, 3] world points; box_warp: side of the
    cube mapped onto the planes ([-box_warp / 2, box_warp / 2]^3 -> [-1, 1]^3). plane_axes: [3, 3, 3]
    (default generate_planes()). Points outside the cube read zeros (padding_mode='zeros' only,
    align_corners=False). Returns [N, 3, M, C].
    """
    if padding_mode != 'zeros':
        raise ValueError(f"sample_from_planes() only supports padding_mode='zeros', got {padding_mode!r}.")
    N, n_planes, C, H, W = plane_features.shape
    _, M, _ = coordinates.shape
    if plane_axes is None:
        plane_axes = generate_planes(device=plane_features.device, dtype=plane_features.dtype)
    if plane_axes.shape[0] != n_planes:
        raise ValueError(f'{n_planes} feature planes but {plane_axes.shape[0]} plane axes.')
    coordinates = coordinates.to(plane_features.dtype) * (2 / box_warp)
    grid = project_onto_planes(plane_axes, coordinates).reshape(N * n_planes, 1, M, 2)
    features = torch.nn.functional.grid_sample(plane_features.reshape(N * n_planes, C, H, W), grid, mode=mode,
                                               padding_mode=padding_mode, align_corners=False)
    # [N * P, C, 1, M] -> [N * P, M, 1, C] -> [N, P, M, C]
    return features.permute(0, 3, 2, 1).reshape(N, n_planes, M, C)
