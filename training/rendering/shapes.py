"""Shapes of radiance fields: the density on a grid, its iso-surface as a mesh, and PLY files.

EG3D's shape export (gen_samples.py --shapes) queries the density on a shape_res^3 grid spanning the
cube of side box_warp (grid points at both faces of the cube), clears a border of 30 * res / 256
voxels to -1000 (floaters at the cube's faces), and runs marching cubes at level 10. Here the same
grid, border and level are the defaults; differences: the grid is indexed [x, y, z] and the mesh comes
out in world coordinates (EG3D flips axis 0 and writes voxel coordinates), and the density grid is
saved as .npy rather than .mrc. Marching cubes is scikit-image's (`skimage.measure.marching_cubes`),
the implementation EG3D's shape_utils calls.
"""

import numpy as np
import torch

EG3D_LEVEL = 10.0          # EG3D's iso-level of the raw density
EG3D_BORDER = 30 / 256     # cleared border, as a fraction of the grid side
CLEARED_DENSITY = -1000.0

# ----------------------------------------------------------------------------------------------


def grid_axis(resolution, box_size):
    """The grid coordinates along one axis: `resolution` points from -box/2 to +box/2 inclusive."""
    return torch.linspace(-box_size / 2, box_size / 2, resolution, dtype=torch.float64)


@torch.no_grad()
def density_grid(sample_fn, resolution, box_size, chunk=2 ** 18, device='cpu', border=EG3D_BORDER):
    """[R, R, R] float32 numpy density, grid[i, j, k] = sigma(x_i, y_j, z_k).

    sample_fn(points [1, M, 3] float32 on `device`) -> [1, M, 1] raw densities. Evaluated `chunk`
    points at a time. border: fraction of the side cleared to CLEARED_DENSITY on every face (0: none).
    """
    axis = grid_axis(resolution, box_size).float()
    out = np.empty(resolution ** 3, dtype=np.float32)
    plane = resolution * resolution
    for start in range(0, resolution ** 3, chunk):
        index = torch.arange(start, min(start + chunk, resolution ** 3))
        points = torch.stack([axis[index // plane], axis[(index // resolution) % resolution], axis[index % resolution]],
                             dim=-1)
        sigma = sample_fn(points.unsqueeze(0).to(device))
        out[start:start + len(index)] = sigma.reshape(-1).float().cpu().numpy()
    grid = out.reshape(resolution, resolution, resolution)
    width = int(border * resolution)
    if width > 0:
        for axis_index in range(3):
            lead = [slice(None)] * 3
            lead[axis_index] = slice(0, width)
            grid[tuple(lead)] = CLEARED_DENSITY
            lead[axis_index] = slice(resolution - width, resolution)
            grid[tuple(lead)] = CLEARED_DENSITY
    return grid


class NoSurfaceError(ValueError):
    """The density never crosses the level: there is no surface to extract."""


def mesh_from_grid(grid, box_size, level=EG3D_LEVEL):
    """(vertices [V, 3] float32 world coordinates, faces [F, 3] int32) of the iso-surface at `level`."""
    from skimage import measure  # imported on use: only shape export needs it
    lo, hi = float(grid.min()), float(grid.max())
    if not lo < level < hi:
        raise NoSurfaceError(f'the density ranges over [{lo:.3g}, {hi:.3g}] and never crosses the level {level:g}')
    step = box_size / (grid.shape[0] - 1)
    vertices, faces, _normals, _values = measure.marching_cubes(grid, level=level, spacing=(step, step, step))
    return (vertices - box_size / 2).astype(np.float32), faces.astype(np.int32)


def write_ply(path_or_file, vertices, faces):
    """A binary little-endian PLY: float xyz vertices, triangles as uchar count + int indices."""
    vertices = np.ascontiguousarray(vertices, dtype='<f4')
    faces = np.asarray(faces, dtype='<i4')
    header = (f'ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\n'
              'property float x\nproperty float y\nproperty float z\n'
              f'element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n').encode('ascii')
    records = np.empty(len(faces), dtype=[('count', 'u1'), ('indices', '<i4', (3,))])
    records['count'] = 3
    records['indices'] = faces
    payload = header + vertices.tobytes() + records.tobytes()
    if hasattr(path_or_file, 'write'):
        path_or_file.write(payload)
    else:
        with open(path_or_file, 'wb') as f:
            f.write(payload)


def read_ply(path):
    """(vertices, faces) of a PLY written by write_ply (for tests and checks)."""
    with open(path, 'rb') as f:
        data = f.read()
    end = data.index(b'end_header\n') + len(b'end_header\n')
    lines = data[:end].decode('ascii').splitlines()
    num_vertices = int(next(line for line in lines if line.startswith('element vertex')).split()[-1])
    num_faces = int(next(line for line in lines if line.startswith('element face')).split()[-1])
    vertices = np.frombuffer(data, dtype='<f4', count=num_vertices * 3, offset=end).reshape(-1, 3)
    records = np.frombuffer(data, dtype=[('count', 'u1'), ('indices', '<i4', (3,))], count=num_faces,
                            offset=end + num_vertices * 12)
    return vertices, records['indices']

# ----------------------------------------------------------------------------------------------
