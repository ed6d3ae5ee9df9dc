"""gen_images.py and gen_video.py on a tiny pickled EpiGRAF generator (issue P1 part 5, sampling).

Render size (--resolution), depth (--image-mode=image_depth), more samples per ray
(--ray-step-multiplier), shapes (--shapes) and EpiGRAF's front_circle video path.

The scripts read what the network declares (training.capabilities): the EpiGRAF Generator's
synthesis options (resolution, ray_step_multiplier, noise_mode), image modes and density method.
"""

import copy
import math
import os
import sys

import imageio.v3 as iio
import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import gen_images  # noqa: E402
import gen_video  # noqa: E402
import tiny_networks  # noqa: E402
from cli_checks import assert_cli_error as assert_error  # noqa: E402
from training import cameras, generation  # noqa: E402
from training import networks_epigraf as ne  # noqa: E402

CFG = tiny_networks.EPIGRAF_CFG
STEPS = CFG['num_ray_steps']


def tiny_epigraf(seed=0):
    torch.manual_seed(seed)
    G = ne.Generator(copy.deepcopy(CFG), z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=16)
    with torch.no_grad():  # some density inside the frustum
        G.synthesis.tri_plane_mlp.model[1].bias[-1] = 1.0
    return G.eval()


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp('nets')
    return dict(epigraf=tiny_networks.save_snapshot(folder / 'epigraf.pkl', tiny_epigraf()),
                sg2=tiny_networks.save_snapshot(folder / 'sg2.pkl', tiny_networks.stylegan2_generator()))


@pytest.fixture
def steps(monkeypatch):
    """The list of samples per ray of the loaded EpiGRAF G's renders."""
    calls = []
    load = generation.load_generator

    def load_declared(*args, **kwargs):
        G = load(*args, **kwargs)
        if isinstance(G, ne.Generator):
            render = G.synthesis.render

            def spy(planes, origins, dirs, num_steps, *rest, **options):
                calls.append(num_steps)
                return render(planes, origins, dirs, num_steps, *rest, **options)
            G.synthesis.render = spy
        return G
    monkeypatch.setattr(generation, 'load_generator', load_declared)
    return calls


def images(*args):
    return CliRunner().invoke(gen_images.main, [str(a) for a in args])


def video(*args):
    return CliRunner().invoke(gen_video.main, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def read_png(path):
    return np.asarray(PIL.Image.open(path))

# ----------------------------------------------------------------------------------------------
# gen_images.py


def test_images_at_the_trained_and_at_any_resolution(nets, tmp_path, steps):
    ok(images('--network', nets['epigraf'], '--seeds=0-1', '--outdir', tmp_path / 'native'))
    assert read_png(tmp_path / 'native' / 'seed0000.png').shape == (8, 8, 3)
    ok(images('--network', nets['epigraf'], '--seeds=0', '--resolution=12', '--yaw=0.2', '--outdir', tmp_path / 'big'))
    picture = read_png(tmp_path / 'big' / 'seed0000.png')
    assert picture.shape == (12, 12, 3)
    assert picture.std() > 0
    assert set(steps) == {STEPS}, 'gen_images renders with the samples per ray of training by default'


def test_depth_images(nets, tmp_path, steps):
    ok(images('--network', nets['epigraf'], '--seeds=0', '--resolution=10', '--image-mode=image_depth',
              '--outdir', tmp_path))
    depth = np.load(tmp_path / 'seed0000.npy')
    assert depth.shape == (10, 10)
    assert np.isfinite(depth).all() and depth.max() <= CFG['dataset']['camera']['ray_end'] + 1e-4 and depth.min() > 0
    assert read_png(tmp_path / 'seed0000.png').shape == (10, 10, 3)


def test_ray_step_multiplier_multiplies_the_samples_per_ray(nets, tmp_path, steps):
    ok(images('--network', nets['epigraf'], '--seeds=0', '--ray-step-multiplier=3', '--outdir', tmp_path))
    assert steps and set(steps) == {3 * STEPS}


def test_ray_step_multiplier_is_eg3ds_sample_mult(nets, tmp_path, monkeypatch):
    seen = []

    def record(G, nrr=None, sample_mult=None):
        seen.append(sample_mult)
        raise generation.GenerationError('stop here')
    monkeypatch.setattr(generation, 'set_render_options', record)
    assert_error(images('--network', nets['sg2'], '--seeds=0', '--ray-step-multiplier=2', '--outdir', tmp_path), 'stop here')
    assert seen == [2]


def test_shapes_export_the_declared_density(nets, tmp_path, steps):
    from training.rendering import shapes
    G = tiny_epigraf()
    z = generation.latents([0], G.z_dim)
    with torch.no_grad():
        ws = G.mapping(z, torch.zeros([1, 0]))
        expected = shapes.density_grid(lambda p: G.sample_density(ws, p, noise_mode='const'), 16, G.density_box)
    level = float(np.median(expected[2:-2, 2:-2, 2:-2]))
    ok(images('--network', nets['epigraf'], '--seeds=0', '--shapes', '--shape-res=16', f'--shape-level={level}',
              '--outdir', tmp_path))
    np.testing.assert_allclose(np.load(tmp_path / 'seed0000_density.npy'), expected, rtol=1e-5, atol=1e-6)
    vertices, faces = shapes.read_ply(tmp_path / 'seed0000.ply')
    assert len(faces) > 0 and np.abs(vertices).max() <= CFG['dataset']['cube_scale'] + 1e-5


def test_epigraf_options_on_networks_that_lack_them_are_one_sentence(nets, tmp_path, steps):
    assert_error(images('--network', nets['sg2'], '--seeds=0', '--resolution=12', '--outdir', tmp_path),
                 '--resolution needs a volume renderer')
    assert_error(images('--network', nets['sg2'], '--seeds=0', '--ray-step-multiplier=2', '--outdir', tmp_path),
                 'applies to volume-rendering networks')
    assert_error(images('--network', nets['epigraf'], '--seeds=0', '--nrr=16', '--outdir', tmp_path),
                 'casts one ray per output pixel')
    assert_error(images('--network', nets['epigraf'], '--seeds=0', '--scale=2', '--outdir', tmp_path),
                 'renders any size with --resolution=R')
    assert not os.path.exists(tmp_path / 'seed0000.png')

# ----------------------------------------------------------------------------------------------
# gen_video.py and the front_circle path.


def front_circle_expected(t, fov=12.0, radius=1.0):
    """(camera centre, focal) of EpiGRAF's front_circle at phase t, in closed form."""
    yaw, pitch = 0.3 * math.sin(2 * math.pi * t), math.pi / 2 + 0.2 * math.cos(2 * math.pi * t)
    centre = radius * np.array([-math.sin(pitch) * math.sin(yaw), math.cos(pitch), math.sin(pitch) * math.cos(yaw)])
    return centre, 1 / (2 * math.tan(math.radians(fov + math.sin(2 * math.pi * t)) / 2))


def assert_front_circle_label(label, t, pivot=(0.0, 0.0, 0.0), **camera):
    centre, focal = front_circle_expected(t, **camera)
    label = label.reshape(-1).double().numpy()
    np.testing.assert_allclose(label[[3, 7, 11]], centre + np.array(pivot), atol=1e-5)
    np.testing.assert_allclose(label[[2, 6, 10]], -centre / np.linalg.norm(centre), atol=1e-5)  # looks at the pivot
    np.testing.assert_allclose(label[[16, 20]], [focal, focal], rtol=1e-5)
    np.testing.assert_allclose(label[[18, 21, 24]], [0.5, 0.5, 1.0], atol=1e-6)


def test_front_circle_video_has_64_frames_on_epigrafs_path(nets, tmp_path, steps, monkeypatch):
    labels = []
    synthesize = generation.synthesize

    def spy(G, ws, c=None, **kwargs):
        labels.append(c.detach().clone())
        return synthesize(G, ws, c, **kwargs)
    monkeypatch.setattr(generation, 'synthesize', spy)
    ok(video('--network', nets['epigraf'], '--seeds=0', '--camera=front_circle', '--resolution=6', '--fps=16',
             '--output', tmp_path / 'circle.mp4'))
    assert len(labels) == 64
    assert_front_circle_label(labels[0], 0.0)
    assert_front_circle_label(labels[16], 16 / 64)
    assert set(steps) == {2 * STEPS}, 'gen_video doubles the samples per ray by default, as EpiGRAF\'s scripts'
    assert iio.imread(tmp_path / 'circle.mp4').shape == (64, 6, 6, 3)


def test_front_circle_labels_for_any_camera_network():
    """Another network's camera (EG3D's pivot and radius, its own focal): the circle turns about the pivot."""
    pivot, radius, fov = (0.0, 0.0, 0.2), 2.7, 18.0
    labels = cameras.front_circle_labels(torch.tensor([0.0, 0.25, 0.5]), fov, radius=radius, pivot=pivot)
    for label, t in zip(labels, [0.0, 0.25, 0.5]):
        assert_front_circle_label(label, t, pivot=pivot, fov=fov, radius=radius)
    assert all(problem is None for problem in cameras.problems(labels))
    assert cameras.gram_fov(cameras.gram_focal(fov)) == pytest.approx(fov)


def test_odd_resolution_is_refused_before_rendering(nets, tmp_path, steps):
    assert_error(video('--network', nets['epigraf'], '--seeds=0', '--resolution=7', '--output', tmp_path / 'x.mp4'),
                 'pass an even --resolution')
    assert not steps
