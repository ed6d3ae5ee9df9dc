"""Ray-conditioned generators (raycond2, raycond3-t/-r): ray maps, shapes, the camera contract, pickles.

The tensor names and shapes of the official release are checked in test_official_tensors.py.
"""

import copy
import importlib
import io
import pathlib
import pickle
import uuid

import numpy as np
import pytest
import torch

from torch_utils import persistence
from training import cameras, networks_raycond2, networks_raycond3, networks_stylegan2, networks_stylegan3, plucker, snapshots

RAY = networks_raycond2.RAY_CHANNELS


def raycond2(seed=0, **kwargs):
    torch.manual_seed(seed)
    return networks_raycond2.Generator(z_dim=8, c_dim=25, w_dim=8, img_resolution=16, img_channels=3,
                                       mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=8, **kwargs).eval()


def raycond3(seed=0, radial=False, **kwargs):
    torch.manual_seed(seed)
    extra = dict(conv_kernel=1, use_radial_filters=True, channel_base=512, channel_max=32) if radial else \
        dict(channel_base=256, channel_max=16)
    return networks_raycond3.Generator(z_dim=8, c_dim=25, w_dim=8, img_resolution=16, img_channels=3,
                                       **extra, **kwargs).eval()


MAKERS = {'raycond2': raycond2, 'raycond3-t': raycond3, 'raycond3-r': lambda **kw: raycond3(radial=True, **kw)}


@pytest.fixture(params=list(MAKERS))
def kind(request):
    return request.param


def two_cameras():
    """Two FFHQ-like cameras, the second with an off-centre principal point and unequal focal lengths."""
    c = cameras.lookat_labels([0.0, 0.35], [0.0, -0.2])
    c[1, 16:] = torch.tensor([4.0, 0, 0.45, 0, 3.6, 0.55, 0, 0, 1])
    return c


def latents(G, n=2, seed=1):
    return torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# What the modulated convolutions see.

@pytest.fixture
def conv_inputs(monkeypatch):
    """Spy on both backbones' modulated_conv2d: {id(weight): input activations} of the last forward."""
    seen = {}
    for module, weight_arg in ((networks_stylegan2, 'weight'), (networks_stylegan3, 'w')):
        original = module.modulated_conv2d

        def spy(*args, _original=original, _weight_arg=weight_arg, **kwargs):
            seen[id(kwargs[_weight_arg])] = kwargs['x'].detach().clone()
            return _original(*args, **kwargs)
        monkeypatch.setattr(module, 'modulated_conv2d', spy)
    return seen


def expected_plucker(c, height, width, legacy, sampling_rate=None):
    """[N, 6, H, W] float64 recomputation of a ray map from its definition (`sampling_rate`: grid with a margin)."""
    if legacy:
        # Official field: pixel units through the normalised intrinsics, x-major order viewed as [H, W].
        x, y = np.meshgrid(np.arange(width), np.arange(height), indexing='ij')
        u, v = x.ravel() + 0.5, y.ravel() + 0.5
    else:
        # Sample (i, j) at the normalised image point ((j + 0.5 - margin) / sr, (i + 0.5 - margin) / sr).
        sr_x, sr_y = (sampling_rate or width), (sampling_rate or height)
        i, j = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
        u, v = (j.ravel() + 0.5 - (width - sr_x) / 2) / sr_x, (i.ravel() + 0.5 - (height - sr_y) / 2) / sr_y
    points = np.stack([u, v, np.ones_like(u)], axis=1)  # [H*W, 3], flat index = i * W + j
    out = []
    for label in c.double().numpy():
        cam2world, K = label[:16].reshape(4, 4), label[16:].reshape(3, 3)
        d = points @ (cam2world[:3, :3] @ np.linalg.inv(K)).T
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        m = np.cross(cam2world[:3, 3], d)
        out.append(np.concatenate([d, m], axis=1).reshape(height, width, 6).transpose(2, 0, 1))
    return np.stack(out)


def raycond2_conv_layers(G):
    """[(name, layer, input resolution)] of the ray-conditioned convs, in order."""
    layers = []
    for res in G.synthesis.block_resolutions:
        block = getattr(G.synthesis, f'b{res}')
        if res > 4:
            layers.append((f'b{res}.conv0', block.conv0, res // 2))
        layers.append((f'b{res}.conv1', block.conv1, res))
    return layers


@pytest.mark.parametrize('legacy', [False, True])
def test_raycond2_rays_fed_to_each_conv(conv_inputs, legacy):
    G = raycond2(legacy_rays=legacy)
    c = two_cameras()
    with torch.no_grad():
        G(latents(G), c, noise_mode='const')
    for name, layer, res in raycond2_conv_layers(G):
        x = conv_inputs[id(layer.weight)]
        assert x.shape[1] == layer.feature_channels + RAY and x.shape[2:] == (res, res), name
        np.testing.assert_allclose(x[:, -RAY:].double().numpy(), expected_plucker(c, res, res, legacy),
                                   atol=2e-5, err_msg=name)
    for res in G.synthesis.block_resolutions:  # ToRGB reads the features only.
        torgb = getattr(G.synthesis, f'b{res}').torgb
        assert conv_inputs[id(torgb.weight)].shape[1] == torgb.in_channels == torgb.weight.shape[1]


@pytest.mark.parametrize('radial', [False, True])
@pytest.mark.parametrize('legacy', [False, True])
def test_raycond3_rays_fed_to_each_layer_with_the_margin(conv_inputs, legacy, radial):
    G = raycond3(radial=radial, legacy_rays=legacy)
    c = two_cameras()
    with torch.no_grad():
        G(latents(G), c)
    sizes = set()
    for name in G.synthesis.layer_names:
        layer = getattr(G.synthesis, name)
        x = conv_inputs[id(layer.weight)]
        size, rate = int(layer.in_size[0]), int(layer.in_sampling_rate)
        sizes.add((size, rate))
        assert x.shape[1] == layer.feature_channels + RAY and x.shape[2:] == (size, size), name
        np.testing.assert_allclose(x[:, -RAY:].double().numpy(), expected_plucker(c, size, size, legacy, rate),
                                   atol=2e-5, err_msg=name)
    assert any(size > rate for size, rate in sizes) and any(size == rate for size, rate in sizes)


@pytest.mark.parametrize('make', [raycond2, raycond3])
def test_legacy_and_physical_fields_differ(make):
    c = two_cameras()[:1]
    physical = networks_raycond2.block_ray_maps(c, [8], legacy=False)[8]
    legacy = networks_raycond2.block_ray_maps(c, [8], legacy=True)[8]
    assert (physical - legacy).abs().max() > 0.1
    # Physical rays of a layer with a margin agree with the image-size map where they overlap.
    with_margin = networks_raycond3.layer_ray_map(c, 28, 28, 8.0, legacy=False)
    torch.testing.assert_close(with_margin[..., 10:18, 10:18], physical, rtol=0, atol=1e-5)
    z = torch.randn([1, 8], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = [make(legacy_rays=legacy)(z, c, noise_mode='const') for legacy in (False, True)]
    assert (images[0] - images[1]).abs().max() > 1e-3


def test_raycond3_magnitude_ema_covers_the_ray_channels(conv_inputs):
    G = raycond3(magnitude_ema_beta=0.5)
    with torch.no_grad():
        G(latents(G), two_cameras(), update_emas=True)
    for name in G.synthesis.layer_names:
        layer = getattr(G.synthesis, name)
        x = conv_inputs[id(layer.weight)]
        expected = 0.5 * x.square().mean() + 0.5 * 1.0  # from its initial value 1
        torch.testing.assert_close(layer.magnitude_ema, expected, msg=name)

# ----------------------------------------------------------------------------------------------
# Shapes and the camera contract.

def test_raycond2_shapes():
    G = raycond2()
    channels = {res: min(64 // res, 8) for res in G.synthesis.block_resolutions}
    for name, layer, in_res in raycond2_conv_layers(G):
        in_channels = channels[in_res]  # conv0 reads the previous block's output, conv1 its own conv0's.
        assert list(layer.weight.shape) == [layer.out_channels, in_channels + RAY, 3, 3], name
        assert list(layer.affine.weight.shape) == [in_channels + RAY, G.w_dim], name
        assert layer.feature_channels == in_channels
    for res in G.synthesis.block_resolutions:
        torgb = getattr(G.synthesis, f'b{res}').torgb
        assert list(torgb.weight.shape) == [3, channels[res], 1, 1]
        assert list(torgb.affine.weight.shape) == [channels[res], G.w_dim]
    assert not hasattr(G.mapping, 'embed') and G.c_dim == 25 and G.mapping.c_dim == 0


@pytest.mark.parametrize('radial', [False, True])
def test_raycond3_shapes(radial):
    G = raycond3(radial=radial)
    prev_out = G.synthesis.input.channels
    for name in G.synthesis.layer_names:
        layer = getattr(G.synthesis, name)
        k = 1 if layer.is_torgb or radial else 3
        assert layer.feature_channels == prev_out
        assert list(layer.weight.shape) == [layer.out_channels, prev_out + RAY, k, k], name
        assert list(layer.affine.weight.shape) == [prev_out + RAY, G.w_dim], name
        prev_out = layer.out_channels
    assert G.mapping.embed is None and G.c_dim == 25
    reference = networks_stylegan3.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                                             **(dict(conv_kernel=1, use_radial_filters=True, channel_base=512,
                                                     channel_max=32) if radial else dict(channel_base=256, channel_max=16)))
    assert G.synthesis.layer_names == reference.synthesis.layer_names
    for name, buffer in reference.synthesis.named_buffers():  # Same filters and geometry as the backbone.
        if not name.endswith('magnitude_ema') and name != 'input.freqs' and name != 'input.phases':
            assert torch.equal(G.synthesis.get_buffer(name), buffer), name


def test_camera_changes_the_image_not_the_mapping(kind):
    G = MAKERS[kind]()
    z = latents(G)
    c = two_cameras()
    c_other = cameras.lookat_labels([-0.3, 0.1], [0.15, 0.0])
    with torch.no_grad():
        ws = G.mapping(z, c)
        assert torch.equal(ws, G.mapping(z, c_other)) and torch.equal(ws, G.mapping(z, None))
        img, img_other = G(z, c, noise_mode='const'), G(z, c_other, noise_mode='const')
        assert torch.equal(G.synthesis(ws, c=c, noise_mode='const'), img)
    assert img.shape == (2, 3, 16, 16) and img.dtype == torch.float32 and torch.isfinite(img).all()
    assert ((img - img_other).abs().amax(dim=(1, 2, 3)) > 1e-3).all()


def test_missing_or_malformed_camera_is_one_clear_error(kind):
    G = MAKERS[kind]()
    z = latents(G)
    ws = G.mapping(z, None)
    for call in (lambda: G.synthesis(ws), lambda: G(z, None)):
        with pytest.raises(TypeError, match=r'camera labels.*G\.synthesis\(ws, c=c\)'):
            call()
    with pytest.raises(ValueError, match=r'shape \[2, 25\].*got \[1, 25\]'):
        G.synthesis(ws, c=two_cameras()[:1])
    make = networks_raycond2.Generator if kind == 'raycond2' else networks_raycond3.Generator
    with pytest.raises(ValueError, match='c_dim=25'):
        make(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3)


def test_gradients_reach_the_ray_channel_weights(kind):
    G = MAKERS[kind]().train()
    G(latents(G), two_cameras()).square().sum().backward()
    layers = [layer for name, layer, _ in raycond2_conv_layers(G)] if kind == 'raycond2' else \
        [getattr(G.synthesis, name) for name in G.synthesis.layer_names]
    for layer in layers:
        assert layer.weight.grad[:, -RAY:].abs().sum() > 0
        assert layer.affine.weight.grad[-RAY:].abs().sum() > 0


def test_generation_helpers_see_a_camera_network(kind):
    from training import capabilities
    G = MAKERS[kind]()
    assert capabilities.label_kind(G) == 'camera' and capabilities.accepts(G, 'camera')

# ----------------------------------------------------------------------------------------------
# Pickles: ours keep their ray field; official ones load without running their code, with legacy rays.

def snapshot(G):
    D = networks_stylegan2.Discriminator(c_dim=25, img_resolution=16, img_channels=3, channel_base=64, channel_max=8)
    return dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None)


def render(G):
    torch.manual_seed(3)
    with torch.no_grad():
        return G(latents(G), two_cameras(), noise_mode='const')


@pytest.mark.parametrize('legacy', [None, False, True])
def test_our_pickle_round_trips_its_ray_field(kind, legacy):
    G = MAKERS[kind](**({} if legacy is None else dict(legacy_rays=legacy)))
    loaded = snapshots.load_network_pkl(io.BytesIO(pickle.dumps(snapshot(G))))['G_ema']
    assert type(loaded) is type(G)
    assert loaded.legacy_rays is bool(legacy)
    assert torch.equal(render(loaded), render(G))


_SG2_NAMES = ['FullyConnectedLayer', 'Conv2dLayer', 'MappingNetwork', 'SynthesisLayer', 'ToRGBLayer', 'SynthesisBlock',
              'SynthesisNetwork', 'Generator', 'DiscriminatorBlock', 'MinibatchStdLayer', 'DiscriminatorEpilogue',
              'Discriminator']
_SG3_NAMES = ['FullyConnectedLayer', 'MappingNetwork', 'SynthesisInput', 'SynthesisLayer', 'SynthesisNetwork', 'Generator']


def _fake_source(names, rays):
    """A module source with the official top-level names that raises if executed."""
    lines = ['raise RuntimeError("the embedded source was executed")', 'import torch']
    if rays:
        lines.append('from training.plucker import plucker_embedding')
    lines += [f'class {name}(torch.nn.Module):\n    pass' for name in names]
    lines += ['def normalize_2nd_moment():\n    pass', 'def modulated_conv2d():\n    pass']
    return '\n'.join(lines) + '\n'


class _OfficialPickler(pickle.Pickler):
    """Pickles a snapshot as the official Ray Conditioning release would: G's objects embed its raycond module."""

    def __init__(self, file, G, kind):
        super().__init__(file)
        self.g_objects = {id(m) for m in G.modules()}
        raycond_names = _SG2_NAMES if kind == 'raycond2' else _SG3_NAMES
        self.raycond_source = _fake_source(raycond_names, rays=True) + f'# {kind}\n'
        self.stylegan2_source = _fake_source(_SG2_NAMES, rays=False)

    def reducer_override(self, obj):
        if not persistence.is_persistent(obj) or isinstance(obj, type):
            return NotImplemented
        function, (meta,) = obj.__reduce__()[:2]
        source = self.raycond_source if id(obj) in self.g_objects else self.stylegan2_source
        state = meta['state']
        if id(obj) in self.g_objects and type(obj).__name__ in ('SynthesisBlock', 'SynthesisNetwork'):
            # The official raycond2 blocks and raycond3 synthesis network keep the ray function as an attribute.
            state = dict(state, embedding=plucker.plucker_embedding)
        return function, (dict(meta, module_src=source, state=state),)


def official_pickle(G, kind):
    """The official files' Generator records no `legacy_rays`."""
    assert 'legacy_rays' not in G.init_kwargs
    buffer = io.BytesIO()
    _OfficialPickler(buffer, G, kind).dump(snapshot(G))
    return buffer.getvalue()


def test_official_pickle_loads_without_running_its_code_and_with_legacy_rays(kind):
    G = MAKERS[kind]()
    raw = official_pickle(G, kind)
    assert b'the embedded source was executed' in raw and b'training.plucker' in raw
    loaded = snapshots.load_network_pkl(io.BytesIO(raw))
    for name in ('G', 'G_ema'):
        assert type(loaded[name]) is type(G)
        assert loaded[name].legacy_rays is True and loaded[name].init_kwargs.legacy_rays is True
    assert type(loaded['D']) is networks_stylegan2.Discriminator
    expected = copy.deepcopy(G)
    expected.synthesis.legacy_rays = True
    assert torch.equal(render(loaded['G_ema']), render(expected))
    assert not torch.equal(render(loaded['G_ema']), render(G))
    # Saved again (our format now), it stays legacy.
    again = snapshots.load_network_pkl(io.BytesIO(pickle.dumps(loaded)))['G_ema']
    assert again.legacy_rays is True and torch.equal(render(again), render(expected))
    # trust_code=True really executes the embedded source (here: it raises).
    with pytest.raises(RuntimeError, match='embedded source was executed'):
        snapshots.load_network_pkl(io.BytesIO(raw), trust_code=True)

# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_fp16_on_cuda(kind, conv_inputs):
    G = MAKERS[kind](num_fp16_res=2, conv_clamp=256).cuda()
    c = two_cameras().cuda()
    with torch.no_grad():
        img = G(latents(G).cuda(), c, noise_mode='const')
        dtypes = {x.dtype for x in conv_inputs.values()}
        reference = G(latents(G).cuda(), c, noise_mode='const', force_fp32=True)
    assert torch.float16 in dtypes  # The top resolutions, with their ray channels, ran in fp16.
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    assert (img - reference).abs().max() < 0.05

# ----------------------------------------------------------------------------------------------
# A pickle written the way the official release writes one: by persistent classes of the official
# module (tests/official_style_raycond2.py), embedding that source, with the ray function as a global.

@pytest.fixture
def official_module(tmp_path, monkeypatch):
    source = (pathlib.Path(__file__).resolve().parents[1] / 'official_style_raycond2.py').read_text()
    name = f'networks_raycond2_release_{uuid.uuid4().hex[:8]}'
    (tmp_path / f'{name}.py').write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


def test_official_ray_function_matches_its_definition():
    c = two_cameras()
    cam2world, intrinsics = c[:, :16].view(-1, 4, 4), c[:, 16:].view(-1, 3, 3)
    for height, width in ((4, 4), (6, 10)):
        got = plucker.plucker_embedding(height, width, intrinsics, cam2world)
        np.testing.assert_allclose(got.double().numpy(), expected_plucker(c, height, width, legacy=True), atol=2e-5)


def test_official_helpers_the_official_source_imports():
    """raycond3's embedded source imports three helpers: a trusted load needs them all to import."""
    from training.plucker import origin_dir_embedding, plucker_embedding, two_plane_embedding  # noqa: F401
    c = two_cameras()
    cam2world, intrinsics = c[:, :16].view(-1, 4, 4), c[:, 16:].view(-1, 3, 3)
    got = origin_dir_embedding(5, 7, intrinsics, cam2world).double().numpy()
    expected_dirs = expected_plucker(c, 5, 7, legacy=True)[:, :3]
    origins = c.double().numpy()[:, [3, 7, 11]][:, :, None, None] * np.ones([1, 1, 5, 7])
    np.testing.assert_allclose(got[:, :3], origins, atol=1e-6)
    np.testing.assert_allclose(got[:, 3:], expected_dirs, atol=2e-5)
    with pytest.raises(NotImplementedError, match='used by none of its networks'):
        two_plane_embedding(5, 7, intrinsics, cam2world)


def test_pickle_written_by_official_code_loads_without_exec_and_gives_the_official_image(official_module, monkeypatch):
    torch.manual_seed(0)
    G = official_module.Generator(z_dim=8, c_dim=25, w_dim=8, img_resolution=16, img_channels=3,
                                  mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=8).eval()
    D = official_module.Discriminator(c_dim=25, img_resolution=16, img_channels=3, channel_base=64, channel_max=8)
    raw = pickle.dumps(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None))
    assert persistence._module_to_src(official_module).encode() in raw

    # The file refers to the official ray function by name: without our implementation admitted, it is refused.
    monkeypatch.setattr(persistence, '_no_exec_globals', {})
    with pytest.raises(snapshots.NetworkPickleError, match=r'training\.plucker\.plucker_embedding'):
        snapshots.load_network_pkl(io.BytesIO(raw))
    monkeypatch.undo()

    def no_exec(_source):
        raise AssertionError('the no-exec loader executed an embedded source')
    monkeypatch.setattr(persistence, '_src_to_module', no_exec)
    loaded = snapshots.load_network_pkl(io.BytesIO(raw))
    assert type(loaded['G_ema']) is networks_raycond2.Generator and loaded['G_ema'].legacy_rays is True
    assert type(loaded['D']) is networks_stylegan2.Discriminator
    expected = render(G)
    torch.testing.assert_close(render(loaded['G_ema']), expected, rtol=0, atol=1e-5)
    img = torch.randn([2, 3, 16, 16], generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(loaded['D'](img, two_cameras()), D(img, two_cameras()), rtol=0, atol=1e-5)
    monkeypatch.undo()
    # A trusted load runs the official module itself; training.plucker is there for its import.
    trusted = snapshots.load_network_pkl(io.BytesIO(raw), trust_code=True)['G_ema']
    assert type(trusted).__name__ == 'Generator' and not isinstance(trusted, networks_raycond2.Generator)
    torch.testing.assert_close(render(trusted), expected, rtol=0, atol=0)
