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
