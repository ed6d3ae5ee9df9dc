"""gen_video.py: W-space keyframe interpolation, camera orbits, the mp4 file and errors."""

import math
import os
import signal
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import scipy.interpolate
import torch
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import gen_video  # noqa: E402
import tiny_networks  # noqa: E402
from cli_checks import assert_cli_error as assert_error  # noqa: E402
from cli_checks import make_read_only, signal_when_ready  # noqa: E402
from training import cameras, generation  # noqa: E402


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp('nets')
    return dict(
        sg2=tiny_networks.save_snapshot(folder / 'sg2.pkl', tiny_networks.stylegan2_generator()),
        classes=tiny_networks.save_snapshot(folder / 'classes.pkl', tiny_networks.stylegan2_generator(c_dim=5)),
        camera=tiny_networks.save_snapshot(folder / 'camera.pkl', tiny_networks.camera_generator()),
        creps=tiny_networks.save_snapshot(folder / 'creps.pkl', tiny_networks.creps_generator()),
        eg3d=tiny_networks.save_snapshot(folder / 'eg3d.pkl', tiny_networks.triplane_generator()),
    )


def run(*args):
    return CliRunner().invoke(gen_video.main, [str(a) for a in args])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


# ----------------------------------------------------------------------------------------------
# The interpolation itself.

@pytest.mark.parametrize('num_keyframes', [1, 2, 5])
def test_keyframe_weights_reproduce_spline_interpolation_of_the_data(num_keyframes):
    data = np.random.RandomState(0).randn(num_keyframes, 3)
    wraps = 2
    x = np.arange(-num_keyframes * wraps, num_keyframes * (wraps + 1))
    spline = scipy.interpolate.interp1d(x, np.tile(data, [2 * wraps + 1, 1]), kind='cubic', axis=0)
    for t in np.linspace(0, num_keyframes, 23, endpoint=False):
        weights = generation.keyframe_weights(num_keyframes, t)
        np.testing.assert_allclose(weights @ data, spline(t), atol=1e-12)
        assert weights.sum() == pytest.approx(1, abs=1e-12)
    for k in range(num_keyframes):
        np.testing.assert_allclose(generation.keyframe_weights(num_keyframes, k), np.eye(num_keyframes)[k], atol=1e-12)


def test_interpolation_frames_hit_the_keyframes(nets):
    from training import snapshots
    G = snapshots.open_network_pkl(nets['sg2'])['G_ema']
    seeds = np.array([[3, 5], [7, 9]])  # 2 cells, 2 keyframes each
    z = torch.stack([generation.latents(row, G.z_dim) for row in seeds])
    label = torch.zeros([1, 0])
    frames = list(generation.interpolation_frames(G, z, 8, 4, lambda frame: label, grid=(2, 1)))
    assert len(frames) == 8 and frames[0].shape == (16, 32, 3)

    def still(seed_pair):
        zz = generation.latents(seed_pair, G.z_dim)
        return generation.tile(generation.to_uint8(generation.generate(G, zz, label.expand(2, -1))), 2, 1)
    assert torch.equal(frames[0], still([3, 7]))      # keyframe 0 of each cell
    assert torch.equal(frames[4], still([5, 9]))      # keyframe 1 at frame 1 * w_frames
    assert not torch.equal(frames[2], frames[0]) and not torch.equal(frames[2], frames[4])


# ----------------------------------------------------------------------------------------------
# The command.

def test_video_file_has_the_frames_and_size(nets, tmp_path):
    output = tmp_path / 'videos' / 'lerp.mp4'
    ok('--network', nets['sg2'], '--seeds=0-3', '--grid=2x1', '--w-frames=5', '--output', output, '--fps=30')
    video = iio.imread(output)
    assert video.shape == (2 * 5, 16, 32, 3)  # 2 keyframes per cell x 5 frames, 2 cells side by side
    assert [name for name in os.listdir(output.parent)] == ['lerp.mp4'], 'no temporary file is left'
    # Lossy, but the first frame must look like the first keyframes: cell 0 loops through seeds 0, 1 and cell 1 through 2, 3.
    G = tiny_networks.stylegan2_generator()
    expected = generation.tile(generation.to_uint8(generation.generate(G, generation.latents([0, 2], 8), torch.zeros([2, 0]))), 2, 1)
    assert np.abs(video[0].astype(int) - expected.numpy().astype(int)).mean() < 12


def test_num_keyframes_and_shuffle(nets, tmp_path):
    ok('--network', nets['sg2'], '--seeds=0-2', '--num-keyframes=2', '--grid=2x1', '--w-frames=3', '--shuffle-seed=1',
       '--output', tmp_path / 'a.mp4')
    assert iio.imread(tmp_path / 'a.mp4').shape[0] == 6
    seeds = gen_video.keyframe_seeds([0, 1, 2], 2, 2, shuffle_seed=None)
    assert seeds.tolist() == [[0, 1], [2, 0]]
    shuffled = gen_video.keyframe_seeds([0, 1, 2], 2, 2, shuffle_seed=1)
    assert sorted(shuffled.ravel().tolist()) == [0, 0, 1, 2]


def test_orbit_camera_follows_the_eg3d_path(nets, tmp_path, monkeypatch):
    calls = []
    original = generation.synthesize

    def spy(G, ws, c=None, **kwargs):
        calls.append(c.detach().clone())
        return original(G, ws, c, **kwargs)
    monkeypatch.setattr(generation, 'synthesize', spy)
    ok('--network', nets['camera'], '--seeds=4', '--w-frames=8', '--output', tmp_path / 'orbit.mp4')
    assert len(calls) == 8
    for frame, label in enumerate(calls):
        t = frame / 8
        yaw, pitch = 0.35 * math.sin(2 * math.pi * t), -0.05 + 0.25 * math.cos(2 * math.pi * t)
        theta, phi = math.pi / 2 + yaw, math.acos(1 - 2 * (math.pi / 2 + pitch) / math.pi)
        origin = 2.7 * np.array([math.sin(phi) * math.cos(math.pi - theta), math.cos(phi), math.sin(phi) * math.sin(math.pi - theta)])
        np.testing.assert_allclose(label[0, [3, 7, 11]].numpy(), origin, atol=1e-5)
    video = iio.imread(tmp_path / 'orbit.mp4')
    assert video.shape == (8, 8, 8, 3)
    assert np.abs(video[0].astype(int) - video[2].astype(int)).mean() > 2, 'the orbit must change the picture'


def test_fixed_camera(nets, tmp_path, monkeypatch):
    calls = []
    original = generation.synthesize
    monkeypatch.setattr(generation, 'synthesize', lambda G, ws, c=None, **kw: calls.append(c.clone()) or original(G, ws, c, **kw))
    ok('--network', nets['camera'], '--seeds=4', '--w-frames=3', '--camera=fixed', '--yaw=0.2', '--radius=2',
       '--output', tmp_path / 'fixed.mp4')
    expected = cameras.lookat_labels([0.2], [0.0], radius=2)
    for label in calls:
        torch.testing.assert_close(label, expected)


def test_class_conditional_video(nets, tmp_path):
    assert_error(run('--network', nets['classes'], '--seeds=0', '--output', tmp_path / 'a.mp4'), '--class')
    ok('--network', nets['classes'], '--seeds=0-1', '--class=2', '--w-frames=2', '--output', tmp_path / 'a.mp4')
    assert iio.imread(tmp_path / 'a.mp4').shape == (4, 16, 16, 3)


def test_errors(nets, tmp_path):
    assert_error(run('--network', nets['sg2'], '--seeds=0-2', '--grid=2x1', '--output', tmp_path / 'a.mp4'), '3 seeds', '--num-keyframes')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--output', tmp_path / 'a.gif'), '.mp4')
    assert_error(run('--network', nets['sg2'], '--seeds=x', '--output', tmp_path / 'a.mp4'), '--seeds')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--yaw=0.1', '--output', tmp_path / 'a.mp4'), '--yaw', 'no camera input')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--grid=2', '--output', tmp_path / 'a.mp4'), 'COLSxROWS')
    assert_error(run('--network', tmp_path / 'missing.pkl', '--seeds=0', '--output', tmp_path / 'a.mp4'), 'missing.pkl')
    assert_error(run('--network', nets['camera'], '--seeds=0', '--pivot=1', '--output', tmp_path / 'a.mp4'), '--pivot')
    assert not os.listdir(tmp_path)
    (tmp_path / 'mine.mp4').write_bytes(b'mine')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--w-frames=2', '--output', tmp_path / 'mine.mp4'), 'mine.mp4', '--overwrite')
    assert (tmp_path / 'mine.mp4').read_bytes() == b'mine'
    ok('--network', nets['sg2'], '--seeds=0', '--w-frames=2', '--output', tmp_path / 'mine.mp4', '--overwrite')
    assert iio.imread(tmp_path / 'mine.mp4').shape[0] == 2


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_while_encoding_removes_the_partial_video(nets, tmp_path, signum):
    """A real signal once the hidden partial file exists (the video is far from done): no file is left."""
    output = tmp_path / 'lerp.mp4'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    returncode, out, err = signal_when_ready(
        [sys.executable, os.path.join(REPO, 'gen_video.py'), '--network', nets['sg2'], '--seeds=0-1',
         '--w-frames=100000', '--device=cpu', '--output', str(output)],
        lambda: any(name.startswith('.lerp.partial-') for name in os.listdir(tmp_path)), signum, cwd=REPO, env=env)
    assert returncode == 128 + signum, (returncode, err)
    assert 'Traceback' not in out + err
    assert err.strip() == ('Interrupted.' if signum == signal.SIGINT else 'Interrupted by SIGTERM.'), err
    assert os.listdir(tmp_path) == [], 'partial video left behind'


# ----------------------------------------------------------------------------------------------
# Options refused before any frame is rendered.

@pytest.fixture
def no_rendering(monkeypatch):
    """Fail the test if a frame would be rendered."""
    def render(*args, **kwargs):
        raise AssertionError('a frame was rendered')
    monkeypatch.setattr(generation, 'interpolation_frames', render)


@pytest.mark.parametrize('bitrate', ['banana', '10Q', '12 M', '0', '999', '20G', ''])
def test_bad_bitrate_is_refused_before_rendering(nets, tmp_path, bitrate):
    result = run('--network', nets['sg2'], '--seeds=0', '--w-frames=2', f'--bitrate={bitrate}', '--output', tmp_path / 'a.mp4')
    assert result.exit_code == 2, result.output  # the option type (dnnlib.cli.Bitrate), a click usage error
    assert_error(result, "'--bitrate'", 'e.g. 12M, 800k or 1200000')
    assert not os.listdir(tmp_path)


def test_bitrates_in_other_formats(nets, tmp_path):
    for bitrate in ('800k', '1200000'):
        ok('--network', nets['sg2'], '--seeds=0', '--w-frames=2', f'--bitrate={bitrate}', '--output', tmp_path / f'{bitrate}.mp4')
        assert iio.imread(tmp_path / f'{bitrate}.mp4').shape == (2, 16, 16, 3)


@pytest.mark.parametrize('option', ['--trunc=nan', '--yaw=inf', '--pitch=nan', '--yaw-range=inf', '--pitch-range=nan',
                                    '--radius=inf', '--fov=nan', '--focal=-inf', '--pivot=0,nan,0'])
def test_non_finite_numbers_are_refused(nets, tmp_path, option, no_rendering):
    result = run('--network', nets['camera'], '--seeds=0', option, '--output', tmp_path / 'a.mp4')
    assert result.exit_code == 2, result.output  # dnnlib.cli.FiniteFloat / FiniteFloatList
    assert_error(result, f"'{option.split('=')[0]}'", 'finite')
    assert not os.listdir(tmp_path)


def test_seed_and_keyframe_counts_beyond_the_limit(nets, tmp_path, no_rendering):
    assert_error(run('--network', nets['sg2'], '--seeds=0-4000000000', '--output', tmp_path / 'a.mp4'), '--seeds', '1000000')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--num-keyframes=100000000', '--output', tmp_path / 'a.mp4'),
                 '--num-keyframes', '1000000')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--grid=2000x1', '--num-keyframes=1', '--output', tmp_path / 'a.mp4'),
                 '--grid', '32000x16', '16384 pixels per side')
    assert not os.listdir(tmp_path)


def test_class_on_a_camera_network_is_refused(nets, tmp_path, no_rendering):
    """The one-hot label would be rendered as a camera."""
    assert_error(run('--network', nets['camera'], '--seeds=0', '--class=1', '--output', tmp_path / 'a.mp4'),
                 '--class=1', 'camera-conditioned', '--yaw')
    assert not os.listdir(tmp_path)


def test_output_that_cannot_be_written(nets, tmp_path, monkeypatch, no_rendering):
    """dnnlib.cli.check_output_path, before the network is loaded."""
    (tmp_path / 'file').write_text('x')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--output', tmp_path / 'file' / 'a.mp4'),
                 f'--output={tmp_path / "file" / "a.mp4"}', 'which is a file')
    (tmp_path / 'folder.mp4').mkdir()
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--output', tmp_path / 'folder.mp4'), '--output', 'is a folder')
    (tmp_path / 'locked').mkdir()
    locked = make_read_only(tmp_path / 'locked', monkeypatch)  # as root, os.access is made to honour the mode bits
    for output in (locked / 'a.mp4', locked / 'new' / 'a.mp4'):
        assert_error(run('--network', nets['sg2'], '--seeds=0', '--output', output), f'--output={output}', 'not writable')
    assert not os.listdir(locked)


# ----------------------------------------------------------------------------------------------
# The view of any-scale and coordinate-based generators (CREPS).

def test_creps_scale_and_view_set_the_frame_size(nets, tmp_path, monkeypatch):
    calls = []
    original = generation.synthesize

    def spy(G, ws, c=None, **kwargs):
        calls.append(kwargs)
        return original(G, ws, c, **kwargs)
    monkeypatch.setattr(generation, 'synthesize', spy)
    ok('--network', nets['creps'], '--seeds=0', '--w-frames=2', '--scale=1.5', '--output', tmp_path / 'scaled.mp4')
    assert iio.imread(tmp_path / 'scaled.mp4').shape == (2, 24, 24, 3)  # int(16 * 1.5)
    assert all(kwargs['scale'] == 1.5 for kwargs in calls)
    calls.clear()
    ok('--network', nets['creps'], '--seeds=0-1', '--grid=2x1', '--num-keyframes=1', '--w-frames=2', '--size=20x12',
       '--translate=0.1,0', '--zoom=2', '--output', tmp_path / 'view.mp4')
    assert iio.imread(tmp_path / 'view.mp4').shape == (2, 12, 40, 3)  # two 20x12 cells side by side
    assert all(kwargs['size'] == (12, 20) and kwargs['translate'] == (0.1, 0) and kwargs['zoom'] == 2 for kwargs in calls)


def test_creps_scaled_frames_are_the_scaled_images(nets):
    G = tiny_networks.creps_generator()
    z = generation.latents([5], G.z_dim).reshape(1, 1, -1)
    label = torch.zeros([1, 0])
    [frame] = generation.interpolation_frames(G, z, 1, 1, lambda frame: label, grid=(1, 1), view=dict(scale=2))
    assert frame.shape == (32, 32, 3)
    still = generation.to_uint8(generation.generate(G, z[0], label, scale=2))[0]
    assert torch.equal(frame, still)


@pytest.mark.parametrize('net, option, words', [
    ('sg2', '--scale=2', ['--scale', '16x16']),
    ('sg2', '--size=32x16', ['--size']),
    ('sg2', '--zoom=2', ['--zoom']),
    ('sg2', '--translate=0.1,0', ['--translate', 'StyleGAN3']),
    ('creps', '--scale=0.01', ['--scale=0.01', '0 pixels', '--scale=0.0625']),
    ('creps', '--scale=1.1', ['--scale=1.1', '17x17', 'even', '--scale=1.125']),
    ('creps', '--size=21x20', ['--size=21x20', 'even']),
    ('creps', '--scale=2000', ['--scale', '32000x32000', '16384 pixels per side']),
])
def test_view_options_are_refused_before_rendering(nets, tmp_path, net, option, words, no_rendering):
    assert_error(run('--network', nets[net], '--seeds=0', option, '--output', tmp_path / 'a.mp4'), *words)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize('option', ['--scale=0', '--scale=nan', '--size=0x4', '--size=4', '--zoom=0', '--zoom=nan',
                                    '--translate=0,inf'])
def test_bad_view_values_are_usage_errors(nets, tmp_path, option, no_rendering):
    result = run('--network', nets['creps'], '--seeds=0', option, '--output', tmp_path / 'a.mp4')
    assert result.exit_code == 2, result.output
    assert_error(result, f"'{option.split('=')[0]}'")
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------------------------
# EG3D: the orbit about the network's own camera, one identity, --image-mode, --sample-mult, --nrr.

def test_eg3d_orbit_keeps_the_identity_and_renders_the_requested_output(nets, tmp_path, monkeypatch):
    calls = []
    original = generation.synthesize

    def spy(G, ws, c=None, **kwargs):
        calls.append(dict(ws=ws.clone(), c=c.clone(), kwargs=kwargs, nrr=G.neural_rendering_resolution,
                          depth=G.rendering_kwargs['depth_resolution']))
        return original(G, ws, c, **kwargs)
    monkeypatch.setattr(generation, 'synthesize', spy)
    ok('--network', nets['eg3d'], '--seeds=4', '--w-frames=4', '--image-mode=image_depth', '--nrr=10',
       '--output', tmp_path / 'depth.mp4')
    assert len(calls) == 4
    G = tiny_networks.triplane_generator()
    assert all(call['kwargs']['image_mode'] == 'image_depth' and call['nrr'] == 10 for call in calls)
    assert all(call['depth'] == 2 * G.rendering_kwargs['depth_resolution'] for call in calls)  # EG3D's default x2
    # The mapping saw EG3D's frontal conditioning camera in every frame (one identity), the renderer the orbit.
    frontal = cameras.lookat_labels([0.0], [0.0], radius=2.7, pivot=[0, 0, 0])
    with torch.no_grad():
        expected_ws = G.mapping(generation.latents([4], G.z_dim), frontal)
    for call in calls:
        torch.testing.assert_close(call['ws'], expected_ws)
    # Frame 0 of EG3D's orbit (yaw 0, pitch -0.05 + 0.25) about the network's pivot (0, 0, 0) at its radius 2.7.
    phi = math.acos(1 - 2 * (math.pi / 2 + 0.2) / math.pi)
    np.testing.assert_allclose(calls[0]['c'][0, [3, 7, 11]].numpy(), [0, 2.7 * math.cos(phi), 2.7 * math.sin(phi)],
                               atol=1e-5)
    video = iio.imread(tmp_path / 'depth.mp4')
    assert video.shape == (4, 10, 10, 3)


def test_render_options_on_a_2d_network_are_one_sentence(nets, tmp_path, no_rendering):
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--nrr=16', '--output', tmp_path / 'x.mp4'),
                 'applies to volume-rendering networks')
    assert_error(run('--network', nets['sg2'], '--seeds=0', '--image-mode=image_raw', '--output', tmp_path / 'x.mp4'),
                 'is not an output of')
