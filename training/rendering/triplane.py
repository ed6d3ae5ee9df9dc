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


# The (grid x = width, grid y = height) world axes of generate_planes()'s three planes: (x, y), (x, z), (z, x).
_DEFAULT_COLUMN_AXES = (0, 0, 2)
_DEFAULT_ROW_AXES = (1, 2, 0)


def _axis_selection(dtype, device):
    """[3, 6]: world points @ it = (the column coordinate of each plane, then the row coordinate of each)."""
    selection = torch.zeros(3, 6, dtype=dtype, device=device)
    for plane, (col, row) in enumerate(zip(_DEFAULT_COLUMN_AXES, _DEFAULT_ROW_AXES)):
        selection[col, plane] = 1
        selection[row, 3 + plane] = 1
    return selection


def padded_plane_rows(plane_features):
    """Tri-planes [N, 3, C, H, W] as channels-last rows [N * 3 * (H + 2) * (W + 2), C], with a zero border.

    The layout `sample_mean_from_planes` gathers from; build it once per render (it is a copy of the
    planes) and pass it to every call. The border of zeros stands for grid_sample's zeros padding: an
    out-of-plane corner reads a zero row, so no validity masks are needed.
    """
    padded = torch.nn.functional.pad(plane_features, (1, 1, 1, 1))
    n, p, c, h, w = padded.shape
    return padded.permute(0, 1, 3, 4, 2).reshape(n * p * h * w, c)


def sample_mean_from_planes(plane_features, coordinates, box_warp, rows=None):
    """sample_from_planes(...).mean(1) for the default plane axes and square planes, as one fused gather: [N, M, C].

    Why: on the CPU grid_sample gathers each of the C channels separately from its own H x W
    plane (the planes are channel-first), then the [N * 3, C, 1, M] result is permuted and copied,
    and the mean over the planes reads it once more. Here the planes are laid out channels-last
    (`padded_plane_rows`, a copy the size of the planes; pass `rows` to reuse it across chunks), and
    each point's 3 planes x 4 bilinear corners = 12 rows of C features are summed with their
    bilinear weights (times 1/3, the mean) by one `embedding_bag(mode='sum')`, which reads contiguous
    rows and writes the mean directly. The plane projection is a choice of axes: one small product
    with a 0/1 matrix (exact: each output is one coordinate times 1 plus zeros), no matrix inverse,
    no einsum, no advanced indexing (slow on the CPU).
    Same values as grid_sample (bilinear, zeros padding, align_corners=False) up to float rounding
    (about 1e-7): corners outside a plane are clamped onto its zero border. Differentiable in the
    features and the coordinates.
    """
    N, n_planes, C, H, W = plane_features.shape
    _, M, _ = coordinates.shape
    if n_planes != 3 or H != W:
        raise ValueError(f'sample_mean_from_planes() reads 3 square planes, got {n_planes} of {H} x {W}.')
    if rows is None:
        rows = padded_plane_rows(plane_features)
    dtype, device = plane_features.dtype, plane_features.device
    # Each plane's (column, row) coordinates in [-1, 1]: [N * M, 6] = 3 columns, then 3 rows.
    grid = coordinates.reshape(N * M, 3).to(dtype) @ _axis_selection(dtype, device)
    grid = grid * (2 / box_warp)  # the scaling of sample_from_planes, in its order
    # grid_sample's unnormalisation for align_corners=False, in its operation order.
    pixel = (grid + 1) * (W / 2) - 0.5
    lo = pixel.floor()
    frac = pixel - lo
    # Padded positions of the two neighbours: pixel k sits at k + 1; anything outside lands on the border.
    # int32 halves the index traffic.
    itype = torch.int32 if rows.shape[0] < 2 ** 31 else torch.int64
    lo = lo.to(itype)
    index = torch.stack([(lo + 1).clamp_(0, W + 1), (lo + 2).clamp_(0, W + 1)], dim=-1)      # [N * M, 6, 2]
    weight = torch.stack([1 - frac, frac], dim=-1)
    plane_size = (H + 2) * (W + 2)
    base = (torch.arange(N, device=device, dtype=itype).view(N, 1, 1, 1) * (n_planes * plane_size)
            + torch.arange(n_planes, device=device, dtype=itype).view(1, 1, n_planes, 1) * plane_size)
    index = index.view(N, M, 6, 2)
    weight = weight.view(N, M, 6, 2)
    row_index = index[:, :, 3:] * (W + 2) + base                                           # [N, M, 3, 2]
    index = row_index.unsqueeze(-1) + index[:, :, :3].unsqueeze(-2)                        # [N, M, 3, 2 rows, 2 cols]
    weight = (weight[:, :, 3:] * (1 / n_planes)).unsqueeze(-1) * weight[:, :, :3].unsqueeze(-2)
    features = torch.nn.functional.embedding_bag(index.reshape(N * M, 4 * n_planes), rows,
                                                 per_sample_weights=weight.reshape(N * M, 4 * n_planes), mode='sum')
    return features.view(N, M, C)
