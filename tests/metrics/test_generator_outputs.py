"""What the metrics see of a generator: the image of a dict output, rendered with the dataset's camera."""

import torch

import tiny_networks
from metrics import metric_utils
from metrics.metric_utils import MetricOptions
from training import cameras


def test_fid_kid_pr_see_the_image_of_an_eg3d_output_at_the_given_camera():
    G = tiny_networks.triplane_generator(resolution=16)
    G.rendering_kwargs = dict(G.rendering_kwargs, jitter=False)
    z = torch.randn([3, G.z_dim], generator=torch.Generator().manual_seed(0))
    c = cameras.lookat_labels([0.3, -0.2, 0.0], [0.1, 0.0, -0.1], radius=2.7, pivot=[0, 0, 0])
    opts = MetricOptions(G=G, G_kwargs=dict(noise_mode='const'))
    with torch.no_grad():
        images = metric_utils.run_generator(opts, z, c)
        expected = G(z, c, noise_mode='const')['image']
    assert images.shape == (3, 3, 16, 16)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)


def test_fid_kid_pr_render_gram_at_the_given_camera():
    import math
    from training import networks_gram
    torch.manual_seed(0)
    G = networks_gram.GramGenerator(
        8, 8, representation_kwargs=dict(hidden_dim=16, hidden_dim_sample=16, center=(0, 0, -1.5)),
        renderer_kwargs=dict(num_samples=16, num_manifolds=8, levels_start=23, levels_end=8)).eval()
    z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(0)).expand(3, -1)
    c = cameras.gram_pose_to_label(torch.full([3], math.pi / 2), torch.tensor([1.2, 1.5, 1.9]), 12)
    opts = MetricOptions(G=G, G_kwargs=dict(noise_mode='const'))
    with torch.no_grad():
        images = metric_utils.run_generator(opts, z, c)
        expected = G(z, c)
    assert images.shape == (3, 3, 8, 8)
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    assert not torch.allclose(images[0], images[2], atol=1e-3)  # one latent, another camera: another image
