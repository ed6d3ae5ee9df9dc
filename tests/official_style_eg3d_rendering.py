"""Stand-ins for EG3D's plain rendering modules, written for the tests (see official_style_eg3d_triplane.py).

The official ImportanceRenderer (training/volumetric_rendering/renderer.py), MipRayMarcher2
(ray_marcher.py) and RaySampler (ray_sampler.py) are plain torch modules, not persistent: a pickle
refers to them by those global names and stores their __dict__, never their source. The tests set
each class's __module__ to the official module name and make that name resolve while pickling.
They hold no parameters or buffers; the renderer keeps EG3D's plane axes as a plain tensor attribute.
No forward passes: the function is what training/networks_triplane.py implements.
"""

import torch


class MipRayMarcher2(torch.nn.Module):
    pass


class RaySampler(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ray_origins_h = self.ray_directions = self.depths = self.image_coords = self.rendering_options = None


class ImportanceRenderer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ray_marcher = MipRayMarcher2()
        # The XY, XZ and ZX planes (EG3D's generate_planes), a plain attribute, not a buffer.
        self.plane_axes = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                        [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                                        [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)
