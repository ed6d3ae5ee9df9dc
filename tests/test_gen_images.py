"""gen_images.py on tiny pickled networks: files, pixels, labels, cameras, transforms and errors."""

import json
import math
import os
import subprocess
import sys

import click
import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import gen_images  # noqa: E402
import tiny_networks  # noqa: E402
from cli_checks import assert_cli_error as assert_error  # noqa: E402
from cli_checks import make_read_only  # noqa: E402
from dnnlib import cli  # noqa: E402
from training import cameras, generation  # noqa: E402


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp('nets')
    return dict(
        sg2=tiny_networks.save_snapshot(folder / 'sg2.pkl', tiny_networks.stylegan2_generator()),
        gray=tiny_networks.save_snapshot(folder / 'gray.pkl', tiny_networks.stylegan2_generator(channels=1)),
        classes=tiny_networks.save_snapshot(folder / 'classes.pkl', tiny_networks.stylegan2_generator(c_dim=5)),
        sg2_camera=tiny_networks.save_snapshot(folder / 'sg2cam.pkl', tiny_networks.stylegan2_generator(c_dim=25, label_kind='camera')),
        classes25=tiny_networks.save_snapshot(folder / 'classes25.pkl', tiny_networks.stylegan2_generator(c_dim=25)),
        camera=tiny_networks.save_snapshot(folder / 'camera.pkl', tiny_networks.camera_generator()),
        sg3r=tiny_networks.save_snapshot(folder / 'sg3r.pkl', tiny_networks.stylegan3_generator()),
        raycond2=tiny_networks.save_snapshot(folder / 'raycond2.pkl', _tiny_raycond2()),
        creps=tiny_networks.save_snapshot(folder / 'creps.pkl', tiny_networks.creps_generator()),
        eg3d=tiny_networks.save_snapshot(folder / 'eg3d.pkl', tiny_networks.triplane_generator()),
    )


def _tiny_raycond2():
    from training import networks_raycond2
    torch.manual_seed(0)
    return networks_raycond2.Generator(z_dim=8, c_dim=25, w_dim=8, img_resolution=16, img_channels=3,
                                       mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=8).eval()


def run(*args):
    return CliRunner().invoke(gen_images.main, [str(a) for a in args])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def read_png(path):
    return np.asarray(PIL.Image.open(path))


def expected_images(G, seeds, c, psi=1.0, **synthesis_kwargs):
    """The official recipe, computed here: z from RandomState(seed), G(z, c), x * 127.5 + 128 truncated to uint8."""
    z = torch.from_numpy(np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds])).float()
    with torch.no_grad():
        images = G(z, c.expand(len(seeds), -1), truncation_psi=psi, noise_mode='const', **synthesis_kwargs)
    return (images.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def load_G(path):
    from training import snapshots
    return snapshots.open_network_pkl(path)['G_ema']


# ----------------------------------------------------------------------------------------------
# Files and pixels.

def test_unconditional_writes_one_png_per_seed_with_the_official_pixels(nets, tmp_path):
    ok('--network', nets['sg2'], '--seeds=0-2,7', '--outdir', tmp_path, '--device=cpu', '--batch=3', '--trunc=0.7')
    assert sorted(os.listdir(tmp_path)) == ['seed0000.png', 'seed0001.png', 'seed0002.png', 'seed0007.png']
    expected = expected_images(load_G(nets['sg2']), [0, 1, 2, 7], torch.zeros([1, 0]), psi=0.7)
    for image, seed in zip(expected, [0, 1, 2, 7]):
        written = read_png(tmp_path / f'seed{seed:04d}.png')
        assert written.shape == (16, 16, 3)
        assert np.array_equal(written, image)


def test_grayscale_network_writes_grayscale_pngs(nets, tmp_path):
    ok('--network', nets['gray'], '--seeds=3', '--outdir', tmp_path)
    image = PIL.Image.open(tmp_path / 'seed0003.png')
    assert image.mode == 'L' and image.size == (16, 16)
    assert np.array_equal(np.asarray(image), expected_images(load_G(nets['gray']), [3], torch.zeros([1, 0]))[0, :, :, 0])


def test_class_conditional(nets, tmp_path):
    assert_error(run('--network', nets['classes'], '--seeds=0', '--outdir', tmp_path), '--class', '5 classes')
    assert_error(run('--network', nets['classes'], '--seeds=0', '--class=5', '--outdir', tmp_path), '--class=5', 'out of range')
    assert_error(run('--network', nets['classes'], '--seeds=0', '--class=-1', '--outdir', tmp_path), 'out of range')
    assert not os.listdir(tmp_path)
    ok('--network', nets['classes'], '--seeds=0-1', '--class=3', '--outdir', tmp_path)
    onehot = torch.zeros([1, 5])
    onehot[0, 3] = 1
    expected = expected_images(load_G(nets['classes']), [0, 1], onehot)
    assert np.array_equal(read_png(tmp_path / 'seed0001.png'), expected[1])
    other = expected_images(load_G(nets['classes']), [0, 1], torch.eye(5)[:1])
    assert not np.array_equal(expected, other), 'the class must matter in this test'


def test_class_on_an_unconditional_network_is_ignored_with_a_warning(nets, tmp_path):
    result = ok('--network', nets['sg2'], '--seeds=0', '--class=2', '--outdir', tmp_path)
    assert 'ignored' in result.output
    assert np.array_equal(read_png(tmp_path / 'seed0000.png'), expected_images(load_G(nets['sg2']), [0], torch.zeros([1, 0]))[0])


def test_grid_tiles_the_single_images(nets, tmp_path):
    ok('--network', nets['sg2'], '--seeds=0-4', '--outdir', tmp_path / 'single')
    ok('--network', nets['sg2'], '--seeds=0-4', '--outdir', tmp_path / 'grid', '--grid')
    assert os.listdir(tmp_path / 'grid') == ['grid.png']
    grid = read_png(tmp_path / 'grid' / 'grid.png')
    assert grid.shape == (2 * 16, 3 * 16, 3)  # 5 images: 3 columns, 2 rows
    for index in range(5):
        row, col = divmod(index, 3)
        assert np.array_equal(grid[row * 16:(row + 1) * 16, col * 16:(col + 1) * 16],
                              read_png(tmp_path / 'single' / f'seed{index:04d}.png'))
    assert not grid[16:, 32:].any(), 'the empty cell stays black'
    ok('--network', nets['sg2'], '--seeds=0-4', '--outdir', tmp_path / 'wide', '--grid=5x1')
    assert read_png(tmp_path / 'wide' / 'grid.png').shape == (16, 80, 3)
    assert_error(run('--network', nets['sg2'], '--seeds=0-4', '--outdir', tmp_path / 'small', '--grid=2x2'), '4 cells', '5 images')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--outdir', tmp_path / 'bad', '--grid=2by2'), 'COLSxROWS')


# ----------------------------------------------------------------------------------------------
# Cameras.

def eg3d_origin(yaw, pitch, radius):
    """Camera position for angles relative to frontal, from EG3D's LookAt formulas (EG3D's camera_utils)."""
    theta = math.pi / 2 + yaw
    phi = math.acos(1 - 2 * (math.pi / 2 + pitch) / math.pi)
    return np.array([radius * math.sin(phi) * math.cos(math.pi - theta), radius * math.cos(phi),
                     radius * math.sin(phi) * math.sin(math.pi - theta)])


@pytest.fixture
def synthesis_calls(monkeypatch):
    """Record the labels the script passes to the generator's synthesis."""
    calls = []
    original = generation.synthesize

    def spy(G, ws, c=None, **kwargs):
        calls.append(c.detach().cpu().clone())
        return original(G, ws, c, **kwargs)
    monkeypatch.setattr(generation, 'synthesize', spy)
    return calls


def test_yaw_pitch_sweep_passes_the_predicted_cameras(nets, tmp_path, synthesis_calls):
    ok('--network', nets['camera'], '--seeds=0-1', '--yaw=-0.4,0,0.4', '--pitch=-0.2,0.1', '--radius=2', '--pivot=0,0.1,0',
       '--focal=3', '--outdir', tmp_path, '--batch=4')
    names = sorted(os.listdir(tmp_path))
    assert names == [f'seed{s:04d}-view{v:02d}.png' for s in range(2) for v in range(6)]
    labels = torch.cat(synthesis_calls).numpy()
    assert labels.shape == (12, 25)
    views = [(yaw, pitch) for pitch in (-0.2, 0.1) for yaw in (-0.4, 0, 0.4)]
    for index, label in enumerate(labels):
        yaw, pitch = views[index % 6]
        cam2world = label[:16].reshape(4, 4)
        origin = eg3d_origin(yaw, pitch, 2.0)
        np.testing.assert_allclose(cam2world[:3, 3], origin, atol=1e-5)
        forward = np.array([0, 0.1, 0]) - origin
        np.testing.assert_allclose(cam2world[:3, 2], forward / np.linalg.norm(forward), atol=1e-5)
        np.testing.assert_allclose(label[16:], [3, 0, 0.5, 0, 3, 0.5, 0, 0, 1], atol=1e-6)
    images = [read_png(tmp_path / name) for name in names[:3]]
    assert not np.array_equal(images[0], images[2]), 'the camera must change the image'


def test_camera_defaults_are_the_frontal_ffhq_camera(nets, tmp_path, synthesis_calls):
    ok('--network', nets['camera'], '--seeds=0', '--outdir', tmp_path)
    assert os.listdir(tmp_path) == ['seed0000.png']
    label = synthesis_calls[0][0].numpy()
    np.testing.assert_allclose(label[:16].reshape(4, 4)[:3, 3], [0, 0, 2.7], atol=1e-5)
    np.testing.assert_allclose(label[16:], [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], atol=1e-6)


def test_fov_is_a_diagonal_field_of_view(nets, tmp_path, synthesis_calls):
    ok('--network', nets['camera'], '--seeds=0', '--fov=18.837', '--outdir', tmp_path)
    focal = synthesis_calls[0][0, 16].item()
    assert focal == pytest.approx(1 / (math.tan(math.radians(18.837) / 2) * math.sqrt(2)), rel=1e-6)
    assert focal == pytest.approx(4.2647, abs=0.01)  # EG3D's FFHQ focal is this FOV
    assert_error(run('--network', nets['camera'], '--seeds=0', '--fov=20', '--focal=4', '--outdir', tmp_path / 'x'), '--fov', '--focal')


def test_poses_file(nets, tmp_path, synthesis_calls):
    poses = cameras.lookat_labels([0.3, -0.1], [0.0, 0.2], radius=1.5, pivot=(0, 0, 0), focal=2.0)
    (tmp_path / 'list.json').write_text(json.dumps(poses.tolist()))
    (tmp_path / 'dataset.json').write_text(json.dumps({'labels': [['a.png', poses[0].tolist()], ['b.png', poses[1].tolist()]]}))
    for name in ('list.json', 'dataset.json'):
        synthesis_calls.clear()
        ok('--network', nets['camera'], '--seeds=5', f'--poses={tmp_path / name}', '--outdir', tmp_path / name[:-5])
        np.testing.assert_allclose(torch.cat(synthesis_calls).numpy(), poses.numpy(), atol=1e-6)
    (tmp_path / 'bad.json').write_text(json.dumps([[1, 2, 3]]))
    assert_error(run('--network', nets['camera'], '--seeds=0', f'--poses={tmp_path / "bad.json"}', '--outdir', tmp_path / 'b'), '25-float')
    broken = poses.clone()
    broken[0, 0] = 5  # not a rotation
    (tmp_path / 'broken.json').write_text(json.dumps(broken.tolist()))
    assert_error(run('--network', nets['camera'], '--seeds=0', f'--poses={tmp_path / "broken.json"}', '--outdir', tmp_path / 'b'), 'broken.json')
    assert_error(run('--network', nets['camera'], '--seeds=0', f'--poses={tmp_path / "list.json"}', '--yaw=0.1', '--outdir', tmp_path / 'b'), '--poses')
    assert_error(run('--network', nets['camera'], '--seeds=0', f'--poses={tmp_path / "nothing.json"}', '--outdir', tmp_path / 'b'), 'nothing.json')


def test_stylegan2_conditioned_on_cameras_turns_with_yaw(nets, tmp_path):
    ok('--network', nets['sg2_camera'], '--seeds=0', '--yaw=-0.5,0.5', '--outdir', tmp_path)
    left, right = read_png(tmp_path / 'seed0000-view00.png'), read_png(tmp_path / 'seed0000-view01.png')
    G = load_G(nets['sg2_camera'])
    expected = expected_images(G, [0, 0], cameras.lookat_labels([-0.5, 0.5], [0, 0]))
    assert np.array_equal(left, expected[0]) and np.array_equal(right, expected[1])
    assert not np.array_equal(left, right)


def test_raycond2_yaw_sweep_renders_the_requested_cameras(nets, tmp_path):
    ok('--network', nets['raycond2'], '--seeds=0,1', '--yaw=-0.4,0,0.4', '--pitch=0.1', '--pivot=0,0,0', '--outdir', tmp_path)
    G = load_G(nets['raycond2'])
    assert G.label_kind == 'camera' and not G.legacy_rays
    labels = cameras.lookat_labels([-0.4, 0, 0.4], [0.1] * 3, pivot=(0, 0, 0))
    for seed in (0, 1):
        views = [read_png(tmp_path / f'seed{seed:04d}-view{v:02d}.png') for v in range(3)]
        expected = expected_images(G, [seed] * 3, labels)
        for view, image in zip(views, expected):
            assert np.array_equal(view, image)
        assert not np.array_equal(views[0], views[2])


def test_a_25_class_network_is_a_class_network(nets, tmp_path):
    """The label kind is what the network declares, not a guess from c_dim == 25."""
    assert_error(run('--network', nets['classes25'], '--seeds=0', '--outdir', tmp_path), '--class')
    assert_error(run('--network', nets['classes25'], '--seeds=0', '--class=3', '--yaw=0.2', '--outdir', tmp_path), 'no camera input')
    ok('--network', nets['classes25'], '--seeds=0', '--class=24', '--outdir', tmp_path)
    G = load_G(nets['classes25'])
    label = torch.zeros([1, 25])
    label[0, 24] = 1
    assert np.array_equal(read_png(tmp_path / 'seed0000.png'), expected_images(G, [0], label)[0])


@pytest.mark.parametrize('option', ['--yaw=0.2', '--pitch=0.1', '--radius=3', '--fov=20', '--focal=4', '--pivot=0,0,0'])
def test_camera_options_on_a_network_without_camera_input(nets, tmp_path, option):
    assert_error(run('--network', nets['sg2'], '--seeds=0', option, '--outdir', tmp_path), option.split('=')[0], 'no camera input')
    assert_error(run('--network', nets['classes'], '--seeds=0', '--class=1', option, '--outdir', tmp_path), option.split('=')[0])
    assert not os.listdir(tmp_path)


def test_class_and_camera_together_are_refused_on_a_camera_network(nets, tmp_path):
    assert_error(run('--network', nets['camera'], '--seeds=0', '--class=1', '--yaw=0.1', '--outdir', tmp_path), '--class', '--yaw')


# ----------------------------------------------------------------------------------------------
# Scale, translation and rotation.

def test_scale_renders_at_the_scaled_resolution(nets, tmp_path):
    ok('--network', nets['camera'], '--seeds=0', '--scale=2', '--outdir', tmp_path)
    assert read_png(tmp_path / 'seed0000.png').shape == (16, 16, 3)
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--scale=2', '--outdir', tmp_path / 'x'), '--scale', '16x16')


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float('inf') if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def test_translate_moves_the_content_by_the_predicted_pixels(nets, tmp_path):
    ok('--network', nets['sg3r'], '--seeds=1', '--outdir', tmp_path / 'base')
    ok('--network', nets['sg3r'], '--seeds=1', '--translate=0.25,0', '--outdir', tmp_path / 'right')
    ok('--network', nets['sg3r'], '--seeds=1', '--translate=0,0.125', '--outdir', tmp_path / 'down')
    base = read_png(tmp_path / 'base' / 'seed0001.png')
    right = read_png(tmp_path / 'right' / 'seed0001.png')
    down = read_png(tmp_path / 'down' / 'seed0001.png')
    # The input is sampled through inv(M): content moves by +x * 32 px to the right and +y * 32 px down.
    assert psnr(right[:, 8:], base[:, :-8]) > 60
    assert psnr(right[:, :-8], base[:, 8:]) < 50 and psnr(right, base) < 50
    assert psnr(down[4:], base[:-4]) > 60
    assert psnr(down[:-4], base[4:]) < 50


def test_rotate_turns_the_content_counterclockwise(nets, tmp_path):
    ok('--network', nets['sg3r'], '--seeds=1', '--outdir', tmp_path / 'base')
    ok('--network', nets['sg3r'], '--seeds=1', '--rotate=90', '--outdir', tmp_path / 'turned')
    base = read_png(tmp_path / 'base' / 'seed0001.png')
    turned = read_png(tmp_path / 'turned' / 'seed0001.png')
    # M rotates x towards -y (up, since y points down): a counterclockwise quarter turn, np.rot90(k=1).
    # Config R (1x1 convolutions, radial filters) is equivariant to quarter turns.
    assert psnr(turned, np.rot90(base, 1)) > 60
    assert psnr(turned, np.rot90(base, -1)) < 50 and psnr(turned, base) < 50


def test_translate_and_rotate_need_an_input_transform(nets, tmp_path):
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--translate=0.1,0', '--outdir', tmp_path), '--translate', 'StyleGAN3')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--rotate=5', '--outdir', tmp_path), '--rotate')
    assert_error(run('--network', nets['sg3r'], '--seeds=0', '--translate=0.1', '--outdir', tmp_path), '--translate', '2 comma-separated')


# ----------------------------------------------------------------------------------------------
# The view of a coordinate-based generator (CREPS): scale, size, translate, zoom.

@pytest.mark.parametrize('scale, side', [(2, 32), (1.5, 24), (1.55, 24), (0.5, 8)])
def test_creps_scale_renders_int_resolution_times_scale(nets, tmp_path, scale, side):
    """The official CREPS rule, side int(img_resolution * scale) (1.55: int(24.8) = 24, not round's 25)."""
    ok('--network', nets['creps'], '--seeds=3', f'--scale={scale}', '--outdir', tmp_path)
    written = read_png(tmp_path / 'seed0003.png')
    assert written.shape == (side, side, 3)
    assert np.array_equal(written, expected_images(load_G(nets['creps']), [3], torch.zeros([1, 0]), scale=scale)[0])


def test_creps_size_renders_a_non_square_view(nets, tmp_path):
    """--size=WIDTHxHEIGHT -> a HEIGHT x WIDTH PNG, G(..., size=(H, W)) at the pixel pitch of --scale; grids tile it."""
    G = load_G(nets['creps'])
    ok('--network', nets['creps'], '--seeds=0-1', '--size=40x20', '--outdir', tmp_path / 'wide')
    wide = read_png(tmp_path / 'wide' / 'seed0001.png')
    assert wide.shape == (20, 40, 3)
    assert np.array_equal(wide, expected_images(G, [0, 1], torch.zeros([1, 0]), size=(20, 40))[1])
    # The view is centred on the trained image: its middle 16 columns at the default pitch are the plain image (to rounding).
    plain = expected_images(G, [1], torch.zeros([1, 0]))[0]
    assert np.abs(wide[2:18, 12:28].astype(int) - plain.astype(int)).max() <= 1
    ok('--network', nets['creps'], '--seeds=0', '--scale=1.5', '--size=10x30', '--outdir', tmp_path / 'tall')
    tall = read_png(tmp_path / 'tall' / 'seed0000.png')
    assert tall.shape == (30, 10, 3)
    assert np.array_equal(tall, expected_images(G, [0], torch.zeros([1, 0]), scale=1.5, size=(30, 10))[0])
    ok('--network', nets['creps'], '--seeds=0-1', '--size=40x20', '--grid', '--outdir', tmp_path / 'grid')
    grid = read_png(tmp_path / 'grid' / 'grid.png')
    assert grid.shape == (20, 80, 3) and np.array_equal(grid[:, 40:], wide)


def test_creps_translate_and_zoom_match_the_generator(nets, tmp_path):
    G = load_G(nets['creps'])
    ok('--network', nets['creps'], '--seeds=2', '--outdir', tmp_path / 'base')
    ok('--network', nets['creps'], '--seeds=2', '--translate=0.25,-0.125', '--outdir', tmp_path / 'moved')
    ok('--network', nets['creps'], '--seeds=2', '--zoom=2', '--outdir', tmp_path / 'zoomed')
    ok('--network', nets['creps'], '--seeds=2', '--translate=0.1,0.2', '--zoom=0.5', '--scale=2', '--outdir', tmp_path / 'all')
    base, moved, zoomed, both = (read_png(tmp_path / name / 'seed0002.png') for name in ('base', 'moved', 'zoomed', 'all'))
    none = torch.zeros([1, 0])
    assert np.array_equal(moved, expected_images(G, [2], none, translate=(0.25, -0.125))[0])
    assert np.array_equal(zoomed, expected_images(G, [2], none, zoom=2)[0])
    assert np.array_equal(both, expected_images(G, [2], none, translate=(0.1, 0.2), zoom=0.5, scale=2)[0])
    assert both.shape == (32, 32, 3)
    assert not np.array_equal(moved, base) and not np.array_equal(zoomed, base)


@pytest.mark.parametrize('option, words', [
    ('--scale=0.01', ['--scale=0.01', 'int(16 * 0.01) = 0', '--scale=0.0625']),
    ('--scale=2000', ['--scale', '32000x32000', '16384 pixels per side']),
    ('--size=20000x2', ['--size', '20000x2', '16384 pixels per side']),
    ('--scale=1024.0625', ['--scale', '16385x16385', '16384 pixels per side']),
    ('--size=16384x16385', ['--size', '16384x16385', '16384 pixels per side']),
])
def test_creps_view_beyond_the_limits_is_one_sentence(nets, tmp_path, option, words):
    assert_error(run('--network', nets['creps'], '--seeds=0', option, '--outdir', tmp_path / 'out'), *words)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('option', ['--scale=0', '--scale=-1', '--scale=nan', '--size=0x20', '--size=20x0', '--size=1.5x20',
                                    '--size=20', '--size=20x20x3', '--size=-4x4', '--zoom=0', '--zoom=-2', '--zoom=inf'])
def test_bad_view_values_are_usage_errors(nets, tmp_path, option):
    name = option.split('=')[0]
    assert_usage_error(run('--network', nets['creps'], '--seeds=0', option, '--outdir', tmp_path / 'out'), f"'{name}'")
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('net, option, words', [
    ('sg2', '--size=32x16', ['--size', 'networks_stylegan2.Generator', '16x16']),
    ('sg2', '--zoom=2', ['--zoom', 'networks_stylegan2.Generator']),
    ('sg2', '--zoom=1', ['--zoom']),
    ('sg2', '--translate=0.1,0', ['--translate', 'StyleGAN3', 'CREPS', 'neither']),
    ('sg3r', '--zoom=2', ['--zoom', 'networks_stylegan3.Generator']),
    ('sg3r', '--size=32x16', ['--size']),
    ('camera', '--size=8x4', ['--size', 'CameraGenerator']),
    ('creps', '--rotate=10', ['--rotate', 'StyleGAN3', '--translate and --zoom']),
])
def test_view_options_need_the_capability(nets, tmp_path, net, option, words):
    assert_error(run('--network', nets[net], '--seeds=0', option, '--outdir', tmp_path / 'out'), *words)
    assert not (tmp_path / 'out').exists()


# ----------------------------------------------------------------------------------------------
# Outputs and inputs that are wrong.

def test_existing_images_are_not_replaced_without_overwrite(nets, tmp_path):
    (tmp_path / 'seed0001.png').write_bytes(b'mine')
    assert_error(run('--network', nets['sg2'], '--seeds=0-1', '--outdir', tmp_path), 'seed0001.png', '--overwrite')
    assert (tmp_path / 'seed0001.png').read_bytes() == b'mine'
    assert sorted(os.listdir(tmp_path)) == ['seed0001.png'], 'nothing is written when one target exists'
    ok('--network', nets['sg2'], '--seeds=0-1', '--outdir', tmp_path, '--overwrite')
    assert read_png(tmp_path / 'seed0001.png').shape == (16, 16, 3)


@pytest.mark.parametrize('seeds', ['a-b', '3-1', '-1', ''])
def test_bad_seeds(nets, tmp_path, seeds):
    assert_error(run('--network', nets['sg2'], f'--seeds={seeds}', '--outdir', tmp_path), '--seeds')


def test_unusable_network_files(tmp_path):
    assert_error(run('--network', tmp_path / 'missing.pkl', '--seeds=0', '--outdir', tmp_path / 'o'), 'missing.pkl')
    (tmp_path / 'text.pkl').write_text('not a pickle')
    assert_error(run('--network', tmp_path / 'text.pkl', '--seeds=0', '--outdir', tmp_path / 'o'), 'text.pkl')
    (tmp_path / 'dict.pkl').write_bytes(__import__('pickle').dumps({'a': 1}))
    assert_error(run('--network', tmp_path / 'dict.pkl', '--seeds=0', '--outdir', tmp_path / 'o'), 'not a network snapshot')
    assert not (tmp_path / 'o').exists()


def test_outdir_that_is_a_file(nets, tmp_path):
    (tmp_path / 'file').write_text('x')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--outdir', tmp_path / 'file'), 'is a file')


def test_outdir_that_cannot_be_written(nets, tmp_path, monkeypatch):
    """dnnlib.cli.check_output_path, before the network is loaded: under a file, or in a read-only folder."""
    (tmp_path / 'file').write_text('x')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--outdir', tmp_path / 'file' / 'out'),
                 f'--outdir={tmp_path / "file" / "out"}', 'which is a file')
    (tmp_path / 'locked').mkdir()
    locked = make_read_only(tmp_path / 'locked', monkeypatch)  # as root, os.access is made to honour the mode bits
    for outdir in (locked, locked / 'out'):
        assert_error(run('--network', nets['sg2'], '--seeds=0', '--outdir', outdir), f'--outdir={outdir}', 'not writable')
    assert not os.listdir(locked)


def assert_usage_error(result, *words):
    """The option type refused a value: click's usage error (exit code 2), one 'Error: ...' sentence, no traceback."""
    assert result.exit_code == 2, result.output
    return assert_error(result, *words)


@pytest.mark.parametrize('option', ['--trunc=nan', '--trunc=inf', '--rotate=-inf', '--radius=inf', '--fov=nan', '--focal=inf',
                                    '--scale=inf', '--yaw=0,nan', '--pitch=inf', '--translate=0,nan', '--pivot=0,0,-inf'])
def test_non_finite_numbers_are_refused(nets, tmp_path, option):
    """nan and inf in any float option, lists included (dnnlib.cli.FiniteFloat / FiniteFloatList), before any work."""
    result = run('--network', nets['camera'], '--seeds=0', option, '--outdir', tmp_path / 'out')
    assert_usage_error(result, f"'{option.split('=')[0]}'", 'finite')
    assert not (tmp_path / 'out').exists()


def test_seed_range_beyond_the_limit_is_refused(nets, tmp_path):
    """Counted in dnnlib.util.parse_range before the list is made (4e9 seeds would need > 100 GB)."""
    result = run('--network', nets['sg2'], '--seeds=0-4000000000', '--outdir', tmp_path / 'out')
    assert_error(result, '--seeds', '4000000001', '1000000')
    assert not (tmp_path / 'out').exists()


def test_image_sizes_beyond_the_limits_are_refused(nets, tmp_path):
    assert_error(run('--network', nets['camera'], '--seeds=0', '--scale=4096', '--outdir', tmp_path / 'out'),
                 '--scale', '32768x32768', '16384 pixels per side')
    assert_error(run('--network', nets['sg2'], '--seeds=0-3', '--grid=100000x100000', '--outdir', tmp_path / 'out'),
                 '--grid', 'MiB')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('net', ['raycond2', 'camera'])
def test_class_on_a_camera_network_is_refused(nets, tmp_path, net):
    """The one-hot label would be used as a camera (a raycond2 network fails inside torch.linalg)."""
    result = run('--network', nets[net], '--seeds=0', '--class=1', '--outdir', tmp_path / 'out')
    assert_error(result, '--class=1', 'camera-conditioned', '--yaw')
    assert not (tmp_path / 'out').exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on machines without CUDA')
def test_cuda_without_cuda(nets, tmp_path):
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--device=cuda', '--outdir', tmp_path), '--device=cpu')


def test_unknown_class_needs_trust_code_in_a_fresh_process(tmp_path):
    """A pickle whose class is not ours is refused without --trust-code; with it, its embedded code runs."""
    snapshot = tmp_path / 'foreign.pkl'
    script = ('import sys; sys.path[:0] = [{repo!r}, {tests!r}]; import tiny_networks; '
              'tiny_networks.save_snapshot({path!r}, tiny_networks.camera_generator())').format(
        repo=REPO, tests=os.path.join(REPO, 'tests'), path=str(snapshot))
    subprocess.run([sys.executable, '-c', script], check=True, cwd=tmp_path)
    command = [sys.executable, os.path.join(REPO, 'gen_images.py'), f'--network={snapshot}', '--seeds=0', f'--outdir={tmp_path / "out"}']
    refused = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode == 1 and 'Traceback' not in refused.stderr
    assert 'CameraGenerator' in refused.stderr and '--trust-code' in refused.stderr
    assert not (tmp_path / 'out').exists()
    trusted = subprocess.run(command + ['--trust-code'], cwd=tmp_path, capture_output=True, text=True)
    assert trusted.returncode == 0, trusted.stderr
    assert os.listdir(tmp_path / 'out') == ['seed0000.png']


@pytest.mark.slow
def test_snapshot_of_train_py_in_a_fresh_process(tmp_path):
    """The issue's 'done when': train.py writes a snapshot, gen_images renders seeds 0-3 from it on the CPU."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    data = tmp_path / 'shapes.zip'
    subprocess.run([sys.executable, 'dataset_tool.py', '--source=synthetic:shapes', f'--dest={data}', '--resolution=16x16',
                    '--max-images=16'], cwd=REPO, check=True, capture_output=True, env=env)
    subprocess.run([sys.executable, 'train.py', f'--outdir={tmp_path / "runs"}', '--cfg=stylegan2', f'--data={data}', '--gpus=1',
                    '--batch=4', '--gamma=1', '--kimg=0.008', '--device=cpu', '--metrics=none', '--cbase=256', '--cmax=16',
                    '--map-depth=2', '--workers=0', '--grid=2x2'], cwd=REPO, check=True, capture_output=True, env=env)
    (run_dir,) = os.listdir(tmp_path / 'runs')
    snapshot = sorted((tmp_path / 'runs' / run_dir).glob('network-snapshot-*.pkl'))[-1]
    proc = subprocess.run([sys.executable, 'gen_images.py', f'--network={snapshot}', '--seeds=0-3', f'--outdir={tmp_path / "out"}',
                           '--device=cpu'], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    names = sorted(os.listdir(tmp_path / 'out'))
    assert names == ['seed0000.png', 'seed0001.png', 'seed0002.png', 'seed0003.png']
    images = [read_png(tmp_path / 'out' / name) for name in names]
    assert all(image.shape == (16, 16, 3) for image in images)
    assert not np.array_equal(images[0], images[1])


def test_ctrl_c_exits_130_in_one_line(nets, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(gen_images.generation, 'generate', interrupted)
    result = run('--network', nets['sg2'], '--seeds=0-3', '--outdir', tmp_path / 'out')
    assert result.exit_code == 130, result.output
    assert result.output.strip() == 'Interrupted.' and 'Traceback' not in result.output
    assert os.listdir(tmp_path / 'out') == []


def test_poses_from_a_dataset_json_name_the_image_whose_camera_is_not_valid():
    poses = cameras.lookat_labels([0.3, -0.1], [0.0, 0.2]).tolist()
    poses[1][24] = 2.0
    with pytest.raises(generation.GenerationError) as info:
        generation.poses_from_json({'labels': [['a.png', poses[0]], ['b.png', poses[1]]]}, source='--poses=d.json')
    assert str(info.value) == ("--poses=d.json: the label of 'b.png' is not a valid camera: the last intrinsics row "
                               "must be (0, 0, 1), not (0, 0, 2).")


@pytest.mark.parametrize('resolution, side', [(16, 1), (49, 1), (48, 1), (16, 24), (48, 100), (1024, 1), (256, 16384)])
def test_suggested_scales_render_the_side_they_name(resolution, side):
    """The scales the messages suggest give exactly that side under int(resolution * scale) (1/49 itself gives 0)."""
    text = generation.scale_for_side(resolution, side)
    assert int(resolution * float(text)) == side and len(text) <= 8, text


def test_view_sizes_are_width_x_height():
    size = cli.ViewSize()
    assert size.convert('320x180', None, None) == (180, 320)  # (H, W), the order of G.synthesis(size=)
    for text in ('0x5', '5x0', '1.5x2', '5', '5x5x5', 'axb', ''):
        with pytest.raises(click.BadParameter, match='WIDTHxHEIGHT'):
            size.convert(text, None, None)


# ----------------------------------------------------------------------------------------------
# EG3D (tri-plane) networks: image modes, render options, shapes.

def _eg3d_reference(mode, yaw=0.0, nrr=None, sample_mult=None):
    """The EG3D network's own output for seed 0 at `yaw`: mapped with the frontal camera, as EG3D's gen_samples.py."""
    G = tiny_networks.triplane_generator()
    if nrr is not None:
        G.neural_rendering_resolution = nrr
    if sample_mult is not None:
        G.rendering_kwargs = dict(G.rendering_kwargs, depth_resolution=6 * sample_mult,
                                  depth_resolution_importance=6 * sample_mult)
    radius, pivot = G.rendering_kwargs['avg_camera_radius'], G.rendering_kwargs['avg_camera_pivot']
    frontal = cameras.lookat_labels([0.0], [0.0], radius=radius, pivot=pivot)
    view = cameras.lookat_labels([yaw], [0.0], radius=radius, pivot=pivot)
    with torch.no_grad():
        ws = G.mapping(generation.latents([0], G.z_dim), frontal)
        G.rendering_kwargs = dict(G.rendering_kwargs, jitter=False)
        return G.synthesis(ws, view, noise_mode='const')[mode]


def test_eg3d_image_modes_write_the_networks_outputs(nets, tmp_path, monkeypatch):
    # Deterministic rendering for the comparison: the network's own outputs with jitter off.
    monkeypatch.setattr(generation, 'set_render_options', _deterministic(generation.set_render_options))
    ok('--network', nets['eg3d'], '--seeds=0', '--yaw=0.3', '--outdir', tmp_path / 'image')
    expected = generation.to_uint8(_eg3d_reference('image', yaw=0.3))[0].numpy()
    assert np.abs(read_png(tmp_path / 'image' / 'seed0000.png').astype(int) - expected).max() <= 1
    ok('--network', nets['eg3d'], '--seeds=0', '--yaw=0.3', '--image-mode=image_raw', '--outdir', tmp_path / 'raw')
    raw = read_png(tmp_path / 'raw' / 'seed0000.png')
    assert raw.shape == (8, 8, 3)
    assert np.abs(raw.astype(int) - generation.to_uint8(_eg3d_reference('image_raw', yaw=0.3))[0].numpy()).max() <= 1
    ok('--network', nets['eg3d'], '--seeds=0', '--yaw=0.3', '--image-mode=image_depth', '--outdir', tmp_path / 'depth')
    depth = np.load(tmp_path / 'depth' / 'seed0000.npy')
    np.testing.assert_allclose(depth, _eg3d_reference('image_depth', yaw=0.3)[0, 0].numpy(), atol=1e-5)
    png = read_png(tmp_path / 'depth' / 'seed0000.png')
    assert png.shape == (8, 8, 3)
    near, far = np.unravel_index(depth.argmin(), depth.shape), np.unravel_index(depth.argmax(), depth.shape)
    assert png[near].astype(int).sum() > png[far].astype(int).sum()  # near is bright


def _deterministic(set_render_options):
    def wrapped(G, nrr=None, sample_mult=None):
        set_render_options(G, nrr=nrr, sample_mult=sample_mult)
        if hasattr(G, 'rendering_kwargs'):
            G.rendering_kwargs = dict(G.rendering_kwargs, jitter=False)
    return wrapped


def test_eg3d_nrr_and_sample_mult(nets, tmp_path, monkeypatch):
    monkeypatch.setattr(generation, 'set_render_options', _deterministic(generation.set_render_options))
    ok('--network', nets['eg3d'], '--seeds=0', '--image-mode=image_depth', '--nrr=12', '--sample-mult=2',
       '--outdir', tmp_path)
    depth = np.load(tmp_path / 'seed0000.npy')
    assert depth.shape == (12, 12)
    np.testing.assert_allclose(depth, _eg3d_reference('image_depth', nrr=12, sample_mult=2)[0, 0].numpy(), atol=1e-5)


def test_eg3d_shapes_write_a_mesh_on_the_density_level(nets, tmp_path):
    from training.rendering import shapes
    G = tiny_networks.triplane_generator()
    ok('--network', nets['eg3d'], '--seeds=0', '--shapes', '--shape-res=24', '--shape-level=-0.5', '--outdir', tmp_path)
    grid = np.load(tmp_path / 'seed0000_density.npy')
    assert grid.shape == (24, 24, 24)
    vertices, faces = shapes.read_ply(tmp_path / 'seed0000.ply')
    assert len(faces) > 0 and np.abs(vertices).max() <= 0.5 + 1e-6  # inside the box_warp cube
    # The density at the vertices (queried from the network) is the level, up to the trilinear grid.
    frontal = cameras.lookat_labels([0.0], [0.0], radius=2.7, pivot=[0, 0, 0])
    with torch.no_grad():
        ws = G.mapping(generation.latents([0], G.z_dim), frontal)
        sigma = G.sample_mixed(torch.from_numpy(vertices[None].copy()), torch.zeros(1, len(vertices), 3), ws,
                               noise_mode='const')['sigma']
    inner = np.abs(vertices).max(axis=1) < 0.5 - 1.0 / 23 * 3  # away from the cleared border
    assert np.median(np.abs(sigma[0, inner, 0].numpy() + 0.5)) < 0.1


@pytest.mark.parametrize('option, words', [('--image-mode=image_depth', 'is not an output of'),
                                           ('--nrr=16', 'applies to volume-rendering networks'),
                                           ('--sample-mult=2', 'applies to volume-rendering networks'),
                                           ('--shapes', 'needs a network with a density field')])
def test_eg3d_options_on_a_2d_network_are_one_sentence(nets, tmp_path, option, words):
    assert_error(run('--network', nets['sg2'], '--seeds=0', option, '--outdir', tmp_path), words)
    assert not os.path.exists(tmp_path / 'seed0000.png')
