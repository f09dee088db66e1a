"""What the embedded default is judged on and never trained on, and the shipped linear baselines: a leaf module, so
the build, the held-out report (``weights.evaluate``) and ``atoken evaluate`` share one definition."""

from __future__ import annotations

from pathlib import Path

HELD_OUT_IMAGES = [("skimage", "chelsea.png"), ("skimage", "coffee.png"), ("skimage", "rocket.jpg"),
                   ("skimage", "astronaut.png"), ("skimage", "motorcycle_left.png"), ("gradio:images", "lion.jpg"),
                   ("gradio:images", "tower.jpg"), ("gradio:images", "cheetah.jpg"), ("gradio:images", "bus.png"),
                   ("gradio:images", "groot.jpeg")]
# File-name patterns training leaves out: the held-out pictures and their near-copies (motorcycle_right is the
# other view of the same scene, cheetah1 the same animal).
HELD_OUT_PATTERNS = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_*", "lion.jpg",
                     "tower.jpg", "cheetah*", "bus.png", "groot.jpeg"]
HELD_OUT_VIDEO = ("gradio:videos", "a.mp4")
HELD_OUT_MESH = ("gradio:models3d", "Duck.glb")
BASELINE_DIR = Path(__file__).parent / "baseline"
IMAGE_PCA = BASELINE_DIR / "pca-48-image.safetensors"
VIDEO_PCA = BASELINE_DIR / "pca-48-video.safetensors"
