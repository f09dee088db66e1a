"""`atoken pack-3d`: mesh -> voxel-feature file (64^3 occupied voxels with 768 features), packed once for datasets."""

from __future__ import annotations

import argparse

from .checks import POSITIVE_INT, check_output
from .common import progress_enabled


def add_parser(sub) -> None:
    p = sub.add_parser("pack-3d", help="render a mesh from many views and save its AToken voxel features")
    p.add_argument("mesh", help="mesh file (glb, gltf, obj, ply, stl)")
    p.add_argument("--output", required=True, help="voxel-feature file to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="allow --output to be the mesh file (replaced)")
    p.add_argument("--views", type=POSITIVE_INT, default=24, help="views on a sphere (Fibonacci spiral, radius 2, 40 deg fov)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..three_d.pipeline import pack_mesh
    from ..three_d.voxelize import save_voxel_features

    check_output(args.output, "voxel-feature", inputs=[args.mesh], overwrite=args.overwrite)
    coords, feats = pack_mesh(args.mesh, num_views=args.views, progress=progress_enabled(args))
    save_voxel_features(args.output, coords, feats)
    print(f"{args.mesh}: {coords.shape[0]} occupied voxels of 64^3 -> {args.output}")
