"""3D assets: meshes -> multi-view renders -> 64^3 voxel features -> AToken tokens -> Gaussian splats.

Heavy optional dependencies (trimesh, Embree) are imported where they are used; this package imports cheaply.
"""

from .camera import Camera, look_at, sphere_cameras
from .gaussian_decoder import ATokenGaussianDecoder, GaussianDecoderOutput
from .gaussians import Gaussians
from .rasterizer import RenderOutput, render_gaussians

__all__ = [
    "ATokenGaussianDecoder", "Camera", "GaussianDecoderOutput", "Gaussians", "RenderOutput", "look_at",
    "render_gaussians", "sphere_cameras",
]
