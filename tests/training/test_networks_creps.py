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
# The building blocks against float64 recomputations of their definitions.


def compose_reference(biline):
    """F[n,c,i,j] = 1/2 sum_r A[n,c,i,r] B[n,c,j,r], with A the first R slots and B the last R."""
    x = biline.detach().numpy().astype(np.float64)
    rank = x.shape[3] // 2
    return 0.5 * np.einsum('ncir,ncjr->ncij', x[..., :rank], x[..., rank:])


def test_compose_biline_is_half_the_sum_of_outer_products():
    biline = torch.randn([2, 3, 5, 16], generator=torch.Generator().manual_seed(0))
    ours = networks_creps.compose_biline(biline)
    assert ours.shape == (2, 3, 5, 5)
    np.testing.assert_allclose(ours.numpy(), compose_reference(biline), rtol=1e-5, atol=1e-5)


def test_the_network_composes_each_accumulated_skip_biline(monkeypatch):
    G = tiny()
    calls = []
    original = networks_creps.compose_biline

    def spy(biline):
        out = original(biline)
        calls.append((biline.clone(), out.clone()))
        return out

    monkeypatch.setattr(networks_creps, 'compose_biline', spy)
    render(G, latents(G))
    assert len(calls) == len(G.synthesis.block_resolutions)
    for biline, out in calls:
        assert biline.shape == (2, G.synthesis.biline_channels, 16, 16) and biline.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), compose_reference(biline), rtol=1e-5, atol=1e-5)


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


def test_synthesis_input_is_the_modulated_fourier_biline():
    torch.manual_seed(0)
    layer = networks_creps.SynthesisInput(w_dim=4, channels=6, size=5, rank=2, bandwidth=10)
    with torch.no_grad():
        layer.weight.normal_()
    w = torch.randn([2, 4])
    with torch.no_grad():
        ours = layer(w).numpy()
        styles = layer.affine(w).numpy().astype(np.float64).reshape(2, 6, 1, 4)

    coords = np.linspace(0, 1, 5)
    freqs = layer.freqs.numpy().astype(np.float64).reshape(3, 2)            # [C/2, R], shared by both lines
    phase = 2 * np.pi * coords[None, :, None] * freqs[:, None, :]           # [C/2, L, R]
    phase = np.concatenate([phase, phase], axis=2)                          # column slots, then row slots
    feats = np.concatenate([np.sin(phase), np.cos(phase)], axis=0)[None]    # [1, C, L, 2R]
    expected = feats * layer.weight.detach().numpy().astype(np.float64) * styles / np.sqrt(6)
    assert ours.shape == (2, 6, 5, 4)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)

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
    assert networks_creps.Generator.synthesis_options == ('noise_mode', 'force_fp32', 'scale')
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
