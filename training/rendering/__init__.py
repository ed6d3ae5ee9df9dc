"""Volume rendering for tri-plane generators, written as plain functions on tensors.

The package covers, in EG3D's conventions (OpenCV cam2world, intrinsics normalised by the image size):
- `rays`: ray sampling (one ray through each pixel centre, row-major pixel order) and ray limits,
  either fixed (`ray_start`, `ray_end`) or 'auto', the intersection with the cube of side `box_warp`;
- `sampling`: stratified depth sampling along rays and importance (inverse-CDF) sampling from the
  weights of a coarse pass;
- `marching`: ray marching (compositing colours, depths and weights along rays);
- `triplane`: tri-plane feature sampling;
- `chunks`: chunked evaluation (bounded memory over many rays or points).

Every random step takes an optional `torch.Generator` and has a deterministic mode (no jitter,
evenly spaced inverse-CDF samples), so renders can be reproduced exactly. This file imports nothing;
import the submodules you need.
"""
