"""Shape export: the density grid, marching cubes and PLY files, against closed-form shapes."""

import numpy as np
import pytest
import torch

from training.rendering import shapes


def _ball(radius, level=shapes.EG3D_LEVEL):
    """Raw density crossing `level` exactly on the sphere |x| = radius (linear in |x|)."""
    def sample(points):
        return (level + 40 * (radius - points.norm(dim=-1, keepdim=True))).to(points.dtype)
    return sample


def test_density_grid_is_indexed_x_y_z_with_inclusive_faces():
    grid = shapes.density_grid(lambda p: (p[..., :1] + 10 * p[..., 1:2] + 100 * p[..., 2:3]), 5, 2.0, chunk=7,
                               border=0)
    axis = np.linspace(-1, 1, 5)
    expected = axis[:, None, None] + 10 * axis[None, :, None] + 100 * axis[None, None, :]
    np.testing.assert_allclose(grid, expected, atol=1e-5)


def test_border_is_cleared_on_every_face():
    grid = shapes.density_grid(lambda p: torch.ones_like(p[..., :1]), 20, 1.0, border=0.1)
    assert (grid[:2] == shapes.CLEARED_DENSITY).all() and (grid[:, :, -2:] == shapes.CLEARED_DENSITY).all()
    assert (grid[2:-2, 2:-2, 2:-2] == 1).all()


def test_mesh_of_a_ball_lies_on_the_sphere_and_survives_a_ply_round_trip(tmp_path):
    radius, box = 0.3, 1.0
    grid = shapes.density_grid(_ball(radius), 48, box)
    vertices, faces = shapes.mesh_from_grid(grid, box)
    radii = np.linalg.norm(vertices, axis=1)
    assert np.abs(radii - radius).max() < 0.2 * box / 47  # well inside a voxel: the field is linear in |x|
    assert abs(vertices.mean(axis=0)).max() < 1e-3       # centred: world coordinates, no axis flip
    # A closed surface: Euler characteristic V - E + F = 2 for a sphere.
    edges = {tuple(sorted(e)) for f in faces for e in ((f[0], f[1]), (f[1], f[2]), (f[0], f[2]))}
    assert len(vertices) - len(edges) + len(faces) == 2
    path = tmp_path / 'ball.ply'
    shapes.write_ply(path, vertices, faces)
    read_vertices, read_faces = shapes.read_ply(path)
    np.testing.assert_array_equal(read_vertices, vertices)
    np.testing.assert_array_equal(read_faces, faces)
    assert path.read_bytes().startswith(b'ply\nformat binary_little_endian 1.0\n')


def test_no_surface_is_one_sentence():
    with pytest.raises(shapes.NoSurfaceError, match='never crosses the level 10'):
        shapes.mesh_from_grid(np.zeros((8, 8, 8), dtype=np.float32), 1.0)
