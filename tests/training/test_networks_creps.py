"""CREPS generator (training/networks_creps.py): the function of its parts, scale, pickles, capabilities.

The tensor names, shapes and order against the official release are checked in
test_official_tensors.py (creps_official_tensors.json); here the networks are tiny, so the tests are fast.
"""

import inspect
import io
import json
import pathlib
import pickle

import numpy as np
import pytest
import torch

from training import networks_creps, networks_stylegan2, snapshots

SPEC = pathlib.Path(__file__).resolve().parents[1] / 'data' / 'spec' / 'creps_official_tensors.json'


def tiny(img_resolution=16, **kwargs):
    torch.manual_seed(0)
    return networks_creps.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=img_resolution, img_channels=3,
                                    mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=32,
                                    **kwargs).eval()


def latents(G, n=2, seed=1):
    return torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))


def render(G, z, **kwargs):
    with torch.no_grad():
        return G(z, None, **kwargs)

# ----------------------------------------------------------------------------------------------
# The building blocks and the whole synthesis against float64 recomputations of their definitions.

SQRT2 = np.sqrt(2)


def lrelu(x):
    return torch.nn.functional.leaky_relu(x, 0.2)  # torch's convention at 0 (slope 0.2), as bias_act's


def reference_synthesis(G, ws, ys, xs):
    """The CREPS synthesis written out plainly in float64 from its definition, for sample coordinates ys, xs.

    Lines A (height, slots 0..R-1) and B (width, slots R..2R-1); every layer pointwise; b4's ToRes unused;
    F = 1/2 A B^T composed from b8 on; per-pixel MLPs; head blocks on the last w. Differentiable in ws.
    """
    S = G.synthesis
    t = {name: v.detach().to(torch.float64) for name, v in list(S.named_parameters()) + list(S.named_buffers())}
    ws = ws.to(torch.float64)

    def dense(prefix, x, act):  # FullyConnectedLayer, lr multiplier 1: weight / sqrt(in), then bias
        w = t[prefix + '.weight']
        y = x @ (w / np.sqrt(w.shape[1])).t() + t[prefix + '.bias']
        return lrelu(y) * SQRT2 if act else y

    def modfc(prefix, x, w, demod, act):  # x [N, I, P] -> [N, O, P]
        styles = dense(prefix + '.affine', w, act=False)
        weight = t[prefix + '.weight']
        if not demod:
            styles = styles / np.sqrt(weight.shape[1])
        wm = weight[None] * styles[:, None, :]
        if demod:
            wm = wm / torch.sqrt((wm ** 2).sum(dim=2, keepdim=True) + 1e-8)
        y = wm @ x + t[prefix + '.bias'][None, :, None]
        return (lrelu(y) * SQRT2 if act else y).clamp(-256, 256)

    n, R = ws.shape[0], S.b4.input.rank
    C = S.b4.input.channels
    amp = t['b4.input.weight'] * dense('b4.input.affine', ws[:, 0], act=False).reshape(n, C, 1, 2 * R) / np.sqrt(C)
    freqs = t['b4.input.freqs'].reshape(C // 2, 1, R)
    parts = []
    for line, u in enumerate((ys, xs)):
        phase = 2 * np.pi * u.to(torch.float64).reshape(1, -1, 1) * freqs
        parts.append(torch.cat([torch.sin(phase), torch.cos(phase)])[None] * amp[..., line * R:(line + 1) * R])
    H, W = len(ys), len(xs)
    x = torch.cat(parts, dim=2).reshape(n, C, -1)             # [N, C, (H + W) R]
    x = modfc('b4.fc1', x, ws[:, 1], True, True)
    w_idx, res, feature = 1, None, None
    for block_res in S.block_resolutions[1:]:
        x = modfc(f'b{block_res}.fc0', x, ws[:, w_idx], True, True)
        x = modfc(f'b{block_res}.fc1', x, ws[:, w_idx + 1], True, True)
        y = modfc(f'b{block_res}.tores', x, ws[:, w_idx + 2], False, False)
        res = y if res is None else res + y
        w_idx += 2
        lines = res.reshape(n, -1, H + W, R)
        F = 0.5 * torch.einsum('ncir,ncjr->nijc', lines[:, :, :H], lines[:, :, H:]).reshape(n * H * W, -1)
        if feature is None:
            feature = F
        else:
            for i in range(4):
                feature = dense(f'decoder_{block_res}.{i}', feature, act=True)
            feature = feature + F
    for i in range(4):
        feature = dense(f'decoder_last.{i}', feature, act=True)
    img = dense('decoder_img', feature, act=False)
    feature = feature.reshape(n, H * W, -1).transpose(1, 2)  # [N, 32, P]
    img = img.reshape(n, H * W, -1).transpose(1, 2)
    w_last = ws[:, -1]
    for block in ('block0', 'block1'):
        feature = modfc(f'{block}.fc0', feature, w_last, True, True)
        feature = modfc(f'{block}.fc1', feature, w_last, True, True)
        img = img + modfc(f'{block}.tores', feature, w_last, False, False)
    return img.reshape(n, -1, H, W)


def mixed_ws(G, n=2, seed=3):
    """A different w per layer, so that a layer reading the wrong w shows."""
    return torch.randn([n, G.num_ws, G.w_dim], generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('view', [dict(), dict(scale=1.5), dict(size=(10, 23), translate=(0.3, -0.1), zoom=1.7)])
def test_synthesis_is_its_definition(view):
    G = tiny()
    ws = mixed_ws(G)
    ys, xs = networks_creps.line_coordinates(16, **view)
    with torch.no_grad():
        ours = G.synthesis(ws, **view)
    expected = reference_synthesis(G, ws, ys, xs)
    assert ours.shape == expected.shape == (2, 3, len(ys), len(xs))
    torch.testing.assert_close(ours.to(torch.float64), expected, rtol=0, atol=1e-4 * expected.abs().max().item())


def test_gradients_are_those_of_the_definition():
    # With autograd on, the layers take their out-of-place branches; the ws gradient is the definition's.
    # On a slightly shifted grid: on the trained grid of this untrained net the gradient is ill-conditioned
    # (measured: moving the coordinates by 1e-6 changes the definition's own gradient by 2%), so float32
    # rounding alone would move it by more than the tolerance.
    G = tiny()
    ws = mixed_ws(G).requires_grad_(True)
    view = dict(translate=(0.013, 0.021))
    weights = torch.randn([2, 3, 16, 16], generator=torch.Generator().manual_seed(4))
    (G.synthesis(ws, **view) * weights).sum().backward()
    ws64 = ws.detach().to(torch.float64).requires_grad_(True)
    ys, xs = networks_creps.line_coordinates(16, **view)
    (reference_synthesis(G, ws64, ys, xs) * weights).sum().backward()
    torch.testing.assert_close(ws.grad.to(torch.float64), ws64.grad, rtol=0, atol=1e-4 * ws64.grad.abs().max().item())


@pytest.mark.parametrize('demodulate', [True, False])
def test_modulated_fc_matches_its_definition(demodulate):
    g = torch.Generator().manual_seed(0)
    x, weight, styles = torch.randn([2, 5, 4, 6], generator=g), torch.randn([7, 5], generator=g), torch.randn([2, 5], generator=g)
    ours = networks_creps.modulated_fc(x, weight, styles, demodulate=demodulate)

    x64, w64, s64 = (t.numpy().astype(np.float64) for t in (x, weight, styles))
    w = w64[None, :, :] * s64[:, None, :]                                   # W'_noi = W_oi s_ni
    if demodulate:
        w = w / np.sqrt((w ** 2).sum(axis=2, keepdims=True) + 1e-8)        # W''_noi
    expected = np.einsum('nihw,noi->nohw', x64, w)
    assert ours.shape == (2, 7, 4, 6)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_synthesis_input_is_the_modulated_fourier_lines():
    torch.manual_seed(0)
    layer = networks_creps.SynthesisInput(channels=6, w_dim=4, resolution=5, rank=2, bandwidth=10)
    with torch.no_grad():
        layer.weight.normal_()
    w = torch.randn([2, 4])
    ys, xs = torch.linspace(0, 1, 5), torch.tensor([0.1, 0.7, 0.9])
    with torch.no_grad():
        ours = layer(w, coords=(ys, xs)).numpy()
        default = layer(w).numpy()
        expected_b = layer(w, coords=(xs, ys)).numpy()[:, :, 3:]  # line B at linspace(0, 1, 5)
        styles = layer.affine(w).numpy().astype(np.float64).reshape(2, 6, 1, 4)

    freqs = layer.freqs.numpy().astype(np.float64).reshape(3, 2)            # [C/2, R], shared by both lines
    amplitude = layer.weight.detach().numpy().astype(np.float64) * styles / np.sqrt(6)
    expected = []
    for line, u in enumerate((ys.numpy(), xs.numpy())):
        phase = 2 * np.pi * u.astype(np.float64)[None, :, None] * freqs[:, None, :]   # [C/2, L, R]
        feats = np.concatenate([np.sin(phase), np.cos(phase)], axis=0)[None]          # [1, C, L, R]
        expected.append(feats * amplitude[..., 2 * line:2 * line + 2])
    expected = np.concatenate(expected, axis=2)
    assert ours.shape == (2, 6, 8, 2)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)
    # Without coordinates: the official bi-line layout [N, C, L, 2R] of the coords buffer (linspace on both lines).
    assert default.shape == (2, 6, 5, 4)
    np.testing.assert_allclose(default[..., :2], expected[:, :, :5], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(default[..., 2:], expected_b, rtol=0, atol=0)


def test_line_coordinates():
    ys, xs = networks_creps.line_coordinates(16, scale=2)
    assert torch.equal(ys, torch.linspace(0, 1, 32)) and torch.equal(xs, ys)       # the official --scale rule, exactly
    ys, xs = networks_creps.line_coordinates(16, scale=1.5, size=(5, 8), translate=(0.25, -0.5), zoom=2)
    pitch = 1 / 23 / 2                                                              # int(16 * 1.5) = 24 samples on [0, 1]
    np.testing.assert_allclose(xs.numpy(), 0.5 - 0.25 + (np.arange(8) - 3.5) * pitch, rtol=0, atol=1e-7)
    np.testing.assert_allclose(ys.numpy(), 0.5 + 0.5 + (np.arange(5) - 2) * pitch, rtol=0, atol=1e-7)
    for bad in (dict(scale=0.01), dict(size=(0, 4)), dict(zoom=0), dict(zoom=float('nan')), dict(translate=(1, 2, 3))):
        with pytest.raises(ValueError):
            networks_creps.line_coordinates(16, **bad)

# ----------------------------------------------------------------------------------------------
# The whole network: shapes, w indexing, precision, capabilities.


@pytest.mark.parametrize('res,num_ws', [(16, 7), (256, 15), (512, 17), (1024, 19)])
def test_num_ws_and_blocks(res, num_ws):
    G = networks_creps.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=res, img_channels=3, channel_base=8192,
                                 channel_max=8, mapping_kwargs=dict(num_layers=1))
    assert G.num_ws == G.synthesis.num_ws == G.mapping.num_ws == num_ws
    assert G.synthesis.block_resolutions == [2 ** i for i in range(2, int(np.log2(res)) + 1)]


def test_every_w_is_used():
    G = tiny()
    ws = G.mapping(latents(G), None).detach().requires_grad_(True)
    G.synthesis(ws).square().sum().backward()
    assert (ws.grad.abs().sum(dim=[0, 2]) > 0).all()


def test_forward_check_of_the_spec_at_small_size():
    # The spec: G(z[1, z_dim], c[1, 0]) in eval mode, no_grad -> an image tensor [1, 3, res, res].
    for entry in json.loads(SPEC.read_text()):
        if entry['role'] == 'G':
            assert entry['forward_check']['output'] == [1, 3, entry['img_resolution'], entry['img_resolution']]
            assert entry['forward_check']['output_type'] == 'Tensor'
    G = tiny()
    img = render(G, latents(G, n=1), noise_mode='random', force_fp32=True)
    assert isinstance(img, torch.Tensor) and img.shape == (1, 3, 16, 16) and img.dtype == torch.float32
    assert torch.isfinite(img).all()


def test_signatures_and_capabilities():
    entry = json.loads(SPEC.read_text())[0]
    assert str(inspect.signature(networks_creps.Generator.forward)).replace('self, ', '') == entry['signatures']['forward']
    assert str(inspect.signature(networks_creps.MappingNetwork.forward)).replace('self, ', '') == entry['signatures']['mapping']
    assert networks_creps.Generator.synthesis_options == ('noise_mode', 'force_fp32', 'scale', 'size', 'view')
    assert networks_creps.Generator.output_key is None
    assert tiny().label_kind == 'none'
    with pytest.raises(ValueError):
        tiny(label_kind='class')


def test_runs_in_float32_on_the_cpu():
    # block0/block1 are float16 only on CUDA.
    G = tiny()
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
             for m in (G.synthesis.block0.fc1, G.synthesis.block1.fc1)]
    img = render(G, latents(G))
    for h in hooks:
        h.remove()
    assert seen == [torch.float32, torch.float32] and img.dtype == torch.float32

# ----------------------------------------------------------------------------------------------
# Rendering at another scale.


@pytest.mark.parametrize('scale', [0.5, 1, 1.5, 2])
def test_scale_sets_the_image_side_and_leaves_the_buffers_alone(scale):
    G = tiny()
    before = {name: b.clone() for name, b in G.named_buffers()}
    img = render(G, latents(G), scale=scale)
    side = int(16 * scale)
    assert img.shape == (2, 3, side, side)
    after = dict(G.named_buffers())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_scale_one_is_the_default():
    G = tiny()
    z = latents(G)
    assert torch.equal(render(G, z, scale=1), render(G, z))
    assert torch.equal(render(G, z, scale=None), render(G, z))


def test_a_nested_grid_gives_the_same_pixels():
    # Coordinates are linspace(0, 1, side), both ends included: at side 2L-1 every other sample is a
    # sample of side L, and every layer is pointwise in the pixel, so those pixels must agree.
    G = tiny()
    z = latents(G)
    fine = render(G, z, scale=31 / 16)
    assert fine.shape[-1] == 31
    torch.testing.assert_close(fine[:, :, ::2, ::2], render(G, z), rtol=0, atol=1e-4)


def test_scale_two_box_downsampled_is_close_to_scale_one():
    # At scale 2 the same range [0, 1] is sampled twice as densely; a 2x2 box average of it is close
    # to, not equal to, the scale-1 image: the two averaged samples (2k)/(2L-1), (2k+1)/(2L-1) are not
    # centred on k/(L-1), and an untrained net with the official bandwidth 10 has content up to tens of
    # cycles per unit that a 2-tap box does not average out (the outer products and MLPs add more).
    # So the bound is loose, relative to how much two latents differ; a wrong grid breaks it.
    # Measured at 64 px: max 5.5, mean 0.49; image std 8.6; two latents differ by 16.5 on average.
    G = tiny(64)
    z = latents(G)
    img1 = render(G, z)
    diff = (torch.nn.functional.avg_pool2d(render(G, z, scale=2), 2) - img1).abs()
    other = (render(G, latents(G, seed=5)) - img1).abs()
    assert diff.mean() < 0.1 * other.mean()
    assert diff.mean() < 0.1 * img1.std()

def test_a_translation_by_whole_pixels_moves_the_image_by_those_pixels():
    # Every layer is pointwise in the sample, so shifting the coordinates by k pixel pitches shifts the
    # image by k pixels (the coordinates are equal up to float rounding).
    G = tiny()
    z = latents(G)
    base = render(G, z)
    moved = render(G, z, translate=(2 / 15, -1 / 15))    # content 2 px right, 1 px up; pitch 1/15 at 16 px
    torch.testing.assert_close(moved[:, :, :-1, 2:], base[:, :, 1:, :-2], rtol=0, atol=1e-3)


def test_zoom_and_size_give_the_finer_grid_of_a_larger_scale():
    # zoom 2 halves the pitch about the centre: 31 samples of it span [0, 1], as scale 31/16 does.
    G = tiny()
    z = latents(G)
    torch.testing.assert_close(render(G, z, zoom=2, size=(31, 31)), render(G, z, scale=31 / 16), rtol=0, atol=1e-3)
    wide = render(G, z, size=(16, 40))                    # the same rows, 12 columns more on each side
    assert wide.shape == (2, 3, 16, 40)
    torch.testing.assert_close(wide[:, :, :, 12:28], render(G, z), rtol=0, atol=1e-3)


@pytest.mark.parametrize('view', [dict(scale=5), dict(size=(37, 150), zoom=3)])
def test_tiled_equals_untiled_exactly(view):
    # 6400 and 5550 pixels: two chunks of the per-pixel stage; bands of one chunk (and the batch) vs one band.
    G = tiny()
    ws = mixed_ws(G)
    with torch.no_grad():
        whole = G.synthesis(ws, tile_pixels=10 ** 9, **view)
        for tile_pixels in (1, 8192):
            assert torch.equal(G.synthesis(ws, tile_pixels=tile_pixels, **view), whole)


def test_the_per_pixel_stage_is_bounded_by_the_band(monkeypatch):
    # No tensor of the per-pixel stage is larger than a band: chunk pixels x batch x the widest layer (128).
    G = tiny()
    ws = mixed_ws(G, n=1)
    largest = []
    original = networks_creps._pointwise_linear

    def spy(x, *args, **kwargs):
        out = original(x, *args, **kwargs)
        largest.append(max(x.numel(), out.numel()))
        return out

    monkeypatch.setattr(networks_creps, '_pointwise_linear', spy)
    with torch.no_grad():
        img = G.synthesis(ws, scale=16, tile_pixels=4096)  # 256 x 256 pixels in 16 bands of 4096
    assert img.shape == (1, 3, 256, 256)
    trunk = G.synthesis.b4.input.channels * (256 + 256) * G.synthesis.b4.input.rank  # the lines, [1, C, H + W, R]
    assert max(largest) <= max(trunk, 4096 * 128) < 256 * 256 * 128


def test_w_avg_follows_the_official_creps_rule():
    # Official CREPS: in training mode, every mapping call without update_emas moves w_avg; eval or
    # update_emas=True leave it.
    G = tiny().train()
    z = latents(G, n=4)
    for mode, update_emas, moves in (('train', False, True), ('train', True, False), ('eval', False, False)):
        getattr(G.mapping, mode)()
        before = G.mapping.w_avg.clone()
        with torch.no_grad():
            ws = G.mapping(z, None, update_emas=update_emas)
        expected = ws[:, 0].mean(dim=0).lerp(before, 0.998) if moves else before
        torch.testing.assert_close(G.mapping.w_avg, expected, rtol=0, atol=1e-7)

# ----------------------------------------------------------------------------------------------
# Pickles load without running their code.


def test_pickle_round_trip_without_executing_code():
    G = tiny()
    D = networks_stylegan2.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=8)
    data = pickle.dumps(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None))
    loaded = snapshots.load_network_pkl(io.BytesIO(data))  # trust_code=False: the no-exec loader
    for key in ('G', 'G_ema'):
        assert type(loaded[key]) is networks_creps.Generator
    assert type(loaded['D']) is networks_stylegan2.Discriminator
    z = latents(G)
    assert torch.equal(render(loaded['G_ema'].eval(), z), render(G, z))
    assert torch.equal(render(loaded['G_ema'].eval(), z, scale=1.5), render(G, z, scale=1.5))


def test_the_float16_head_path_stays_close_to_float32(monkeypatch):
    # No GPU in the test runs: force the float16 choice on the CPU to exercise the head's float16 path
    # (infinity-norm prenormalisation, casts, float32 accumulation of the image).
    G = tiny()
    z = latents(G)
    reference = render(G, z)
    monkeypatch.setattr(networks_creps, '_block_dtype', lambda use_fp16, device, force_fp32:
                        torch.float16 if use_fp16 and not force_fp32 else torch.float32)
    half = render(G, z)
    assert half.dtype == torch.float32
    assert (half - reference).abs().max() < 0.01 * reference.abs().max()
    assert torch.equal(render(G, z, force_fp32=True), reference)


def test_forward_check_of_the_spec_at_256_with_the_official_kwargs():
    # About 2 s on two CPU cores; the 512 entry's check would take about four times as long.
    entry = next(e for e in json.loads(SPEC.read_text()) if e['role'] == 'G' and e['img_resolution'] == 256)
    torch.manual_seed(0)
    G = networks_creps.Generator(**entry['kwargs']).eval()
    with torch.no_grad():
        img = G(torch.randn([1, G.z_dim]), torch.zeros([1, G.c_dim]))
    assert list(img.shape) == entry['forward_check']['output'] and torch.isfinite(img).all()
