"""The visualizer's server (viz/server.py, viz/renderer.py, viz/catalogue.py) through real HTTP on the loopback.

Frames are checked against each network's own output computed here from its tensors (G.mapping and
G.synthesis with the official seed latents and labels built from training.cameras), not against
frames captured once. Every bad request must get a JSON sentence and leave the server serving.
"""

import io
import json
import math
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import PIL.Image
import pytest
import requests
import torch
from click.testing import CliRunner

import visualizer
from training import cameras, capabilities, generation, snapshots
from viz_helpers import serving

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 30


def session():
    s = requests.Session()
    s.trust_env = False  # no proxy: the server is on the loopback
    return s


HTTP = session()
SEQ = iter(range(10 ** 6, 10 ** 9))  # the page numbers its requests; a lower number than a client's last is stale


def render(base, timeout=TIMEOUT, headers=None, **settings):
    settings.setdefault('client', 'test')
    settings.setdefault('seq', next(SEQ))
    return HTTP.post(f'{base}/api/render', json=settings, timeout=timeout, headers=headers)


def pixels_of(response):
    assert response.status_code == 200, response.text
    assert response.headers['Content-Type'] == 'image/png'
    return np.asarray(PIL.Image.open(io.BytesIO(response.content)))


def load(path):
    return snapshots.open_network_pkl(path)['G_ema'].eval()


def z_of(seed, z_dim):
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim).astype(np.float32))


def to_pixels(img):
    return (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def assert_close_pixels(got, expected):
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


@pytest.fixture(scope='module')
def server(snapshots):
    names = ['stylegan2', 'stylegan2-class', 'stylegan3', 'creps', 'eg3d', 'raycond2', 'run']
    with serving([snapshots[name] for name in names]) as (base, app):
        yield base, app, {name: str(index) for index, name in enumerate(names)}


def alive(base):
    assert HTTP.get(f'{base}/api/networks', timeout=TIMEOUT).status_code == 200

# ----------------------------------------------------------------------------------------------
# The page and its files.


def test_the_page_and_its_static_files_are_served(server):
    base, app, _ = server
    page = HTTP.get(base + '/', timeout=TIMEOUT)
    assert page.status_code == 200 and page.headers['Content-Type'].startswith('text/html')
    assert 'static/app.js' in page.text and 'id="frame"' in page.text
    script = HTTP.get(base + '/static/app.js', timeout=TIMEOUT)
    assert script.status_code == 200 and 'javascript' in script.headers['Content-Type']
    assert script.content == open(os.path.join(REPO, 'viz', 'static', 'app.js'), 'rb').read()
    assert HTTP.get(base + '/static/style.css', timeout=TIMEOUT).headers['Content-Type'].startswith('text/css')


@pytest.mark.parametrize('path', ['/static/../server.py', '/static/%2e%2e/server.py', '/static/..%2fserver.py',
                                  '/static/%2Fetc%2Fpasswd', '/static/', '/static/static/app.js', '/server.py',
                                  '/static/app.js%00.png'])
def test_static_files_cannot_escape_their_folder(server, path):
    base = server[0]
    with socket.create_connection(('127.0.0.1', int(base.rsplit(':', 1)[1])), timeout=TIMEOUT) as sock:
        sock.sendall(f'GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'.encode())
        answer = b''
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b' ', 2)[1])
    assert status == 404, (path, answer[:200])
    assert b'import' not in answer  # no Python source came back
    alive(base)

# ----------------------------------------------------------------------------------------------
# Networks and their controls.


def test_networks_are_those_named_at_launch_and_a_run_lists_its_snapshots(server, snapshots, tmp_path):
    base, _, ids = server
    listing = HTTP.get(f'{base}/api/networks', timeout=TIMEOUT).json()['networks']
    assert [item['label'] for item in listing] == ['stylegan2.pkl', 'stylegan2-class.pkl', 'stylegan3.pkl', 'creps.pkl',
                                                   'eg3d.pkl', 'raycond2.pkl', 'run']
    run = listing[int(ids['run'])]
    assert run['kind'] == 'run'
    assert [s['label'] for s in run['snapshots']] == ['network-snapshot-000000.pkl', 'network-snapshot-000040.pkl']
    # A snapshot written later (training goes on) is listed on the next request.
    new = [os.path.join(snapshots['run'], name) for name in ('network-snapshot-000080.pkl', 'network-snapshot-000040-1.pkl')]
    for path in new:  # train.py names a second snapshot of one kimg -1
        shutil.copy(snapshots['stylegan2'], path)
    try:
        again = HTTP.get(f'{base}/api/networks', timeout=TIMEOUT).json()['networks'][int(ids['run'])]
        assert [s['label'] for s in again['snapshots']] == ['network-snapshot-000000.pkl', 'network-snapshot-000040.pkl',
                                                           'network-snapshot-000040-1.pkl', 'network-snapshot-000080.pkl']
        assert again['snapshots'][-1]['id'] == f"{ids['run']}/network-snapshot-000080.pkl"
        shown = HTTP.get(f'{base}/api/network', params={'id': f"{ids['run']}/network-snapshot-000040.pkl"},
                         timeout=TIMEOUT).json()
        assert shown['name'] == 'networks_stylegan3.Generator'
    finally:
        for path in new:
            os.remove(path)


@pytest.mark.parametrize('family', ['stylegan2', 'stylegan2-class', 'stylegan3', 'creps', 'eg3d', 'raycond2'])
def test_controls_are_what_the_network_declares(server, snapshots, family):
    base, _, ids = server
    info = HTTP.get(f'{base}/api/network', params={'id': ids[family]}, timeout=TIMEOUT).json()
    G = load(snapshots[family])
    c = info['controls']
    assert info['z_dim'] == G.z_dim and info['img_resolution'] == G.img_resolution
    assert info['label_kind'] == capabilities.label_kind(G)
    assert (c['camera'] is not None) == (capabilities.label_kind(G) == 'camera')
    assert c['class'] == (G.c_dim if capabilities.label_kind(G) == 'class' else 0)
    assert c['transform'] == capabilities.accepts(G, 'transform')
    assert c['scale'] == capabilities.accepts(G, 'scale') and c['view'] == capabilities.accepts(G, 'view')
    assert c['image_modes'] == list(capabilities.image_modes(G))
    assert (c['nrr'] is not None) == capabilities.accepts(G, 'render')
    if c['camera'] is not None:
        camera = generation.default_camera(G)
        assert c['camera']['radius'] == pytest.approx(camera['radius'])
        assert cameras.fov_to_focal(c['camera']['fov']) == pytest.approx(camera['focal'])
    # Feature maps: every listed layer is a module whose output has the listed shape.
    assert info['layers'] and all(len(layer['shape']) == 3 for layer in info['layers'])
    expected = {'stylegan2': 'b16.conv1', 'stylegan3': 'L0_36_32', 'eg3d': 'backbone.synthesis.b16.conv1'}
    if family in expected:
        assert expected[family] in [layer['name'] for layer in info['layers']]


def test_a_snapshot_named_alone_is_labelled_with_its_run(snapshots):
    run = snapshots['run']
    with serving([os.path.join(run, 'network-snapshot-000040.pkl'), snapshots['stylegan2']]) as (base, _):
        labels = [item['label'] for item in HTTP.get(f'{base}/api/networks', timeout=TIMEOUT).json()['networks']]
    assert labels == [f'{os.path.basename(run)}/network-snapshot-000040.pkl', 'stylegan2.pkl']


def test_unknown_or_path_like_network_ids_are_refused(server, tmp_path):
    base, _, ids = server
    for network in ['99', '-1', '../stylegan2.pkl', '/etc/passwd', f"{ids['run']}/../stylegan2.pkl",
                    f"{ids['run']}/network-snapshot-999999.pkl", f"{ids['stylegan2']}/x", 'x']:
        answer = HTTP.get(f'{base}/api/network', params={'id': network}, timeout=TIMEOUT)
        assert answer.status_code == 400 and 'Unknown' in answer.json()['error'], network
        assert render(base, network=network).status_code == 400
    alive(base)

# ----------------------------------------------------------------------------------------------
# Frames: the network's own output.


def test_a_frame_is_the_networks_output_with_its_render_time(server, snapshots):
    base, _, ids = server
    response = render(base, network=ids['stylegan2'], seed=3, psi=0.7, client='first', seq=1)
    G = load(snapshots['stylegan2'])
    with torch.no_grad():
        ws = G.mapping(z_of(3, G.z_dim), torch.zeros(1, 0), truncation_psi=0.7)
        expected = to_pixels(G.synthesis(ws, noise_mode='const'))
    assert_close_pixels(pixels_of(response), expected)
    assert float(response.headers['X-Render-Ms']) > 0 and response.headers['X-Seq'] == '1'


def test_a_class_and_a_blend_of_two_seeds(server, snapshots):
    base, _, ids = server
    G = load(snapshots['stylegan2-class'])
    label = torch.zeros(1, 4)
    label[0, 2] = 1
    with torch.no_grad():
        w0 = G.mapping(z_of(5, G.z_dim), label)
        w1 = G.mapping(z_of(9, G.z_dim), label)
        expected = to_pixels(G.synthesis(0.75 * w0 + 0.25 * w1, noise_mode='const'))
        other = to_pixels(G.synthesis(w0, noise_mode='const'))
    got = pixels_of(render(base, network=ids['stylegan2-class'], seed=5, seed2=9, blend=0.25, **{'class': 2}))
    assert_close_pixels(got, expected)
    assert np.abs(got.astype(int) - other.astype(int)).max() > 2


def test_the_camera_is_the_label_of_its_yaw_pitch_radius_and_fov(server, snapshots):
    base, _, ids = server
    G = load(snapshots['raycond2'])
    camera = dict(yaw=25.0, pitch=-10.0, radius=2.5, fov=20.0)
    pivot = generation.default_camera(G)['pivot']  # the page sets no pivot: the network's default camera's
    c = cameras.lookat_labels([math.radians(25.0)], [math.radians(-10.0)], radius=2.5, pivot=pivot,
                              focal=cameras.fov_to_focal(20.0))
    with torch.no_grad():
        expected = to_pixels(G.synthesis(G.mapping(z_of(4, G.z_dim), c), c=c, noise_mode='const'))
    got = pixels_of(render(base, network=ids['raycond2'], seed=4, camera=camera))
    assert_close_pixels(got, expected)
    frontal = pixels_of(render(base, network=ids['raycond2'], seed=4, camera=dict(camera, yaw=0.0)))
    assert np.abs(got.astype(int) - frontal.astype(int)).max() > 2


def test_view_controls_of_stylegan3_and_creps(server, snapshots):
    base, _, ids = server
    G3 = load(snapshots['stylegan3'])
    with torch.no_grad():
        generation.set_input_transform(G3, (0.25, -0.1), 30)
        ws = G3.mapping(z_of(2, G3.z_dim), torch.zeros(1, 0))
        expected = to_pixels(G3.synthesis(ws, noise_mode='const'))
    got = pixels_of(render(base, network=ids['stylegan3'], seed=2, translate=[0.25, -0.1], rotate=30))
    assert_close_pixels(got, expected)
    still = pixels_of(render(base, network=ids['stylegan3'], seed=2))  # the transform is set per frame
    assert np.abs(still.astype(int) - got.astype(int)).max() > 2
    Gc = load(snapshots['creps'])
    with torch.no_grad():
        ws = Gc.mapping(z_of(1, Gc.z_dim), torch.zeros(1, 0))
        expected = to_pixels(Gc.synthesis(ws, scale=2.0, zoom=1.5, translate=(0.1, 0.0), noise_mode='const'))
    got = pixels_of(render(base, network=ids['creps'], seed=1, scale=2, zoom=1.5, translate=[0.1, 0]))
    assert got.shape == (32, 32, 3)
    assert_close_pixels(got, expected)


def test_image_modes_and_render_options_of_a_volume_renderer(server, snapshots):
    base, _, ids = server
    depth = pixels_of(render(base, network=ids['eg3d'], seed=1, image_mode='image_depth'))
    raw = pixels_of(render(base, network=ids['eg3d'], seed=1, image_mode='image_raw', nrr=16))
    assert depth.shape[:2] == (8, 8) and raw.shape[:2] == (16, 16)
    fine = pixels_of(render(base, network=ids['eg3d'], seed=1, image_mode='image_raw', sample_mult=2))
    assert fine.shape[:2] == (8, 8)
    # Options are per frame: the next frame has the loaded neural rendering resolution again.
    assert pixels_of(render(base, network=ids['eg3d'], seed=1, image_mode='image_raw')).shape[:2] == (8, 8)


def test_a_layer_is_shown_as_stylegan3s_visualizer_shows_it(server, snapshots):
    base, _, ids = server
    G = load(snapshots['stylegan2'])
    captured = {}
    module = dict(G.synthesis.named_modules())['b8.conv1']
    handle = module.register_forward_hook(lambda m, i, o: captured.setdefault('x', o))
    with torch.no_grad():
        G.synthesis(G.mapping(z_of(6, G.z_dim), torch.zeros(1, 0)), noise_mode='const')
    handle.remove()
    x = captured['x'][0].double()                                    # [8, 8, 8]

    def expected(channels, normalize, gain_db):
        shown = channels
        if normalize:
            shown = shown / shown.abs().amax(dim=(1, 2), keepdim=True)
        return to_pixels((shown * 10 ** (gain_db / 20)).unsqueeze(0).float())

    # Three channels from 2, each divided by its largest magnitude, 6 dB up.
    answer = render(base, network=ids['stylegan2'], seed=6, layer='b8.conv1', channel=2, normalize=True, gain_db=6)
    assert_close_pixels(pixels_of(answer), expected(x[2:5], True, 6))
    stats = json.loads(answer.headers['X-Layer-Stats'])
    assert stats['channels'] == [2, 5] and stats['of'] == 8
    assert stats['all']['mean'] == pytest.approx(float(x.mean()), rel=1e-4, abs=1e-6)
    assert stats['all']['std'] == pytest.approx(float(x.std()), rel=1e-4)
    assert stats['shown']['max'] == pytest.approx(float(x[2:5].abs().max()), rel=1e-4)
    # One channel, raw values; a first channel past the end shows the last ones that exist.
    one = pixels_of(render(base, network=ids['stylegan2'], seed=6, layer='b8.conv1', channels=1, channel=7))
    assert one.shape == (8, 8) and np.abs(one.astype(int) - expected(x[7:8], False, 0)[..., 0].astype(int)).max() <= 1
    last = render(base, network=ids['stylegan2'], seed=6, layer='b8.conv1', channel=100)
    assert json.loads(last.headers['X-Layer-Stats'])['channels'] == [5, 8]
    assert_close_pixels(pixels_of(last), expected(x[5:8], False, 0))
    assert 'channels must be 1 or 3' in render(base, network=ids['stylegan2'], layer='b8.conv1', channels=2).json()['error']
    assert 'X-Layer-Stats' not in render(base, network=ids['stylegan2'], seed=6).headers


def test_mapping_results_are_cached_per_seed_and_truncation(server, monkeypatch):
    base, app, ids = server
    renderer = app.catalogue.renderer(ids['eg3d'])
    calls = []
    mapping = renderer.G.mapping  # EG3D's mapping is a method of G

    def counted(*args, **kwargs):
        calls.append(kwargs.get('truncation_psi'))
        return mapping(*args, **kwargs)
    monkeypatch.setattr(renderer.G, 'mapping', counted)
    render(base, network=ids['eg3d'], seed=11, psi=0.5)
    assert calls == [0.5]
    for yaw in (5.0, 10.0, 15.0):  # EG3D maps a fixed camera: moving the view re-runs only the synthesis
        assert render(base, network=ids['eg3d'], seed=11, psi=0.5, camera={'yaw': yaw}).status_code == 200
    assert calls == [0.5]
    render(base, network=ids['eg3d'], seed=11, psi=0.6)
    render(base, network=ids['eg3d'], seed=12, psi=0.6)
    assert calls == [0.5, 0.6, 0.6]


# ----------------------------------------------------------------------------------------------
# Bad requests: one sentence each, and the server goes on.


@pytest.mark.parametrize('settings, words', [
    (dict(scale=2000), 'scale=2000 is out of range'),
    (dict(seed=-1), 'seed=-1 is out of range'),
    (dict(seed=2 ** 40), 'out of range'),
    (dict(seed='x'), 'seed must be a number'),
    (dict(seed=1.5), 'whole number'),
    (dict(psi=9), 'psi=9 is out of range'),
    (dict(camera={'yaw': 10}), 'no camera input'),
    (dict(translate=[0.1, 0]), '--translate needs a network'),
    (dict(translate='left'), 'translate must be [x, y]'),
    (dict(scale=2), '--scale needs a generator'),
    (dict(image_mode='image_depth'), 'is not an output'),
    (dict(layer='nope'), 'is not a feature-map layer'),
    (dict(noise_mode='loud'), 'noise_mode must be one of'),
    (dict(sample_mult=2), 'applies to volume-rendering networks'),
    (dict(seq='1'), 'seq must be an integer'),
])
def test_bad_settings_get_one_sentence(server, settings, words):
    base, _, ids = server
    answer = render(base, network=ids['stylegan2'], **settings)
    assert answer.status_code == 400, answer.text
    message = answer.json()['error']
    assert words in message and '\n' not in message and 'Traceback' not in message
    alive(base)


def test_out_of_range_sizes_are_refused_before_rendering(server):
    base, _, ids = server
    assert 'at most 1024' in render(base, network=ids['creps'], scale=65).json()['error']
    assert 'out of range' in render(base, network=ids['eg3d'], nrr=4096).json()['error']
    assert 'out of range' in render(base, network=ids['eg3d'], sample_mult=100).json()['error']
    assert 'out of range' in render(base, network=ids['raycond2'], camera={'fov': 0}).json()['error']
    assert 'out of range' in render(base, network=ids['stylegan2-class'], **{'class': 4}).json()['error']


def test_malformed_requests_get_a_status_and_a_sentence(server):
    base, _, _ = server
    url = f'{base}/api/render'
    assert HTTP.post(url, data=b'{not json', headers={'Content-Type': 'application/json'},
                     timeout=TIMEOUT).status_code == 400
    assert HTTP.post(url, json=[1, 2], timeout=TIMEOUT).json()['error'].startswith('A render request is a JSON object')
    not_finite = HTTP.post(url, data=b'{"network": "0", "seq": 1, "psi": NaN}', timeout=TIMEOUT)
    assert not_finite.status_code == 400 and 'psi=nan is out of range' in not_finite.json()['error']
    big = HTTP.post(url, data=b'{"a": "' + b'x' * 70000 + b'"}', timeout=TIMEOUT)
    assert big.status_code == 413 and 'at most' in big.json()['error']
    with socket.create_connection(('127.0.0.1', int(base.rsplit(':', 1)[1])), timeout=TIMEOUT) as sock:
        sock.sendall(b'POST /api/render HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
        assert b' 411 ' in sock.recv(65536).split(b'\r\n')[0] + b' '
    assert HTTP.get(f'{base}/api/render', timeout=TIMEOUT).status_code == 405
    assert HTTP.post(f'{base}/api/networks', timeout=TIMEOUT).status_code == 405
    assert HTTP.get(f'{base}/api/nothing', timeout=TIMEOUT).status_code == 404
    assert HTTP.get(f'{base}/nothing', timeout=TIMEOUT).status_code == 404
    alive(base)


def test_a_failing_render_is_reported_and_the_server_goes_on(server, monkeypatch):
    base, app, ids = server
    renderer = app.catalogue.renderer(ids['stylegan2'])

    def broken(settings):
        raise RuntimeError('the network broke')
    monkeypatch.setattr(renderer, 'render', broken)
    answer = render(base, network=ids['stylegan2'])
    assert answer.status_code == 500 and 'RuntimeError: the network broke' in answer.json()['error']
    monkeypatch.undo()
    assert render(base, network=ids['stylegan2']).status_code == 200


def test_an_unsafe_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / 'ran.txt'

    class Evil:
        def __reduce__(self):
            return os.system, (f'echo ran > {marker}',)
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps({'G_ema': Evil()}))
    with serving([str(path)]) as (base, _):
        answer = HTTP.get(f'{base}/api/network', params={'id': '0'}, timeout=TIMEOUT)
        assert answer.status_code == 400 and '--trust-code' in answer.json()['error']
        assert render(base, network='0').status_code == 400
        alive(base)
    assert not marker.exists()

# ----------------------------------------------------------------------------------------------
# Responsiveness and bounds.


def test_a_request_overtaken_by_a_newer_one_is_not_rendered(server):
    base, app, ids = server
    answers = {}
    app.render_lock.acquire()  # a frame is being rendered: requests 1 to 3 wait for it
    try:
        threads = []
        for seq in (1, 2, 3):
            thread = threading.Thread(target=lambda s=seq: answers.__setitem__(
                s, render(base, network=ids['stylegan2'], client='dragging', seq=s)))
            thread.start()
            threads.append(thread)
            deadline = time.monotonic() + TIMEOUT
            while app.newest.get('dragging', 0) < seq and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        app.render_lock.release()
    for thread in threads:
        thread.join(TIMEOUT)
    assert answers[1].status_code == answers[2].status_code == 409
    assert 'superseded' in answers[1].json()['error']
    assert answers[3].status_code == 200 and answers[3].headers['X-Seq'] == '3'
    # Another client's requests are its own.
    assert render(base, network=ids['stylegan2'], client='other', seq=1).status_code == 200


def test_waiting_renders_and_each_clients_rate_are_bounded(snapshots):
    with serving([snapshots['stylegan2']], rate=2.0, max_waiting=2) as (base, app):
        codes = [render(base, client='fast', seq=i).status_code for i in range(1, 7)]
        assert codes[:4] == [200] * 4 and 429 in codes[4:]  # a burst of twice the rate, then refused
        assert render(base, client='other', seq=1).status_code == 200
        app.render_lock.acquire()
        try:
            app.waiting = 2  # two renders wait already
            busy = render(base, client='third', seq=1)
            assert busy.status_code == 503 and 'busy' in busy.json()['error']
        finally:
            app.waiting = 0
            app.render_lock.release()
        alive(base)

# ----------------------------------------------------------------------------------------------
# Access.


def test_a_token_guards_the_api_but_not_the_page(snapshots):
    with serving([snapshots['stylegan2']], token='sesame') as (base, _):
        assert HTTP.get(base + '/', timeout=TIMEOUT).status_code == 200
        refused = HTTP.get(f'{base}/api/networks', timeout=TIMEOUT)
        assert refused.status_code == 403 and 'token' in refused.json()['error']
        assert HTTP.get(f'{base}/api/networks', headers={'X-Viz-Token': 'wrong'}, timeout=TIMEOUT).status_code == 403
        assert render(base).status_code == 403
        assert HTTP.get(f'{base}/api/networks', headers={'X-Viz-Token': 'sesame'}, timeout=TIMEOUT).status_code == 200
        assert HTTP.get(f'{base}/api/networks?token=sesame', timeout=TIMEOUT).status_code == 200
        assert render(base, headers={'X-Viz-Token': 'sesame'}).status_code == 200


def test_without_a_token_only_loopback_hosts_are_answered(server):
    base = server[0]
    for host in ('evil.example', 'evil.example:8765', '10.0.0.1'):
        answer = HTTP.get(f'{base}/api/networks', headers={'Host': host}, timeout=TIMEOUT)
        assert answer.status_code == 403, host
    for host in ('127.0.0.1', 'localhost:1234', '[::1]:80'):
        assert HTTP.get(f'{base}/api/networks', headers={'Host': host}, timeout=TIMEOUT).status_code == 200, host

# ----------------------------------------------------------------------------------------------
# The command.


def test_the_command_refuses_bad_paths_and_busy_ports_in_one_sentence(snapshots, tmp_path):
    result = CliRunner().invoke(visualizer.main, [str(tmp_path / 'missing.pkl')])
    assert result.exit_code != 0 and 'is neither a network pickle nor a run directory' in result.output
    assert 'Traceback' not in result.output
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        result = CliRunner().invoke(visualizer.main, [snapshots['stylegan2'], f'--port={busy.getsockname()[1]}'])
    assert result.exit_code != 0 and 'Cannot listen on 127.0.0.1' in result.output and 'Traceback' not in result.output
    assert CliRunner().invoke(visualizer.main, []).exit_code != 0  # a network is required


@pytest.mark.parametrize('host', ['127.0.0.1', '127.0.0.2'])
def test_the_command_serves_and_beyond_the_loopback_prints_a_token(snapshots, host):
    process = subprocess.Popen([sys.executable, os.path.join(REPO, 'visualizer.py'), snapshots['stylegan2'], '--port=0',
                                f'--host={host}', '--device=cpu'], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert 'Visualizer for 1 network(s) on cpu: http://' in line, line
        url = line.strip().rsplit(' ', 1)[1]
        base = url.split('/?')[0].rstrip('/')
        if host == '127.0.0.1':
            assert '?token=' not in url
            assert HTTP.get(f'{base}/api/networks', timeout=TIMEOUT).status_code == 200
        else:
            token = url.split('?token=')[1]
            assert len(token) >= 16
            assert HTTP.get(f'{base}/api/networks', timeout=TIMEOUT).status_code == 403
            assert HTTP.get(f'{base}/api/networks', headers={'X-Viz-Token': token}, timeout=TIMEOUT).status_code == 200
    finally:
        process.terminate()
        process.wait(TIMEOUT)
