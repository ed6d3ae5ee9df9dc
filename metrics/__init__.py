"""Quality metrics (FID, KID, PR, PPL, IS, equivariance) and their detectors."""
