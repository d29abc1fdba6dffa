"""Real noisy photos alone, no clean image: Neighbor2Neighbor on the noisy shots themselves (issue 20).

    python scripts/train.py --config configs/selfsup_real.py --workdir runs/selfsup_real \
        --config.data.dir=/path/to/real_nam25/noisy --config.data.val_dir=/path/to/real_nam25

``data.dir`` holds the noisy photos (any size; kept at their own size, random 64x64 patches with flips and
rotations) and nothing else: the loss compares two neighbour sub-samples of each noisy patch (Huang et al.
2021). ``data.val_dir`` is a folder of real pairs (``clean/`` and ``noisy/``) used only to score the model;
no clean image enters training. The residual U-Net of configs/unet_faces.py, Adam 1e-3, cosine, EMA 0.999.

Neighbor2Neighbor assumes noise independent from pixel to pixel. Real sRGB noise is not (demosaicing and
the camera's own denoising and JPEG correlate it: in shared/data/real_nam25 the noise of neighbouring pixels
correlates at 0.70), so the two sub-samples share part of their noise and the model learns to keep it:
the measured result and what it would take are in docs/quality.md, "Without clean images".

Measured 2026-12-03 on CPU-2 on real_nam25 (25 noisy shots; 800 steps, 4.6 min): 37.38 dB / SSIM 0.923 on
the 25 full pairs against the noisy input's 37.06 / 0.916 (BM3D at its estimated sigma 37.21).
"""
import os

from jaxdenoise.config import load_file


def get_config():
    c = load_file(os.path.join(os.path.dirname(__file__), "default.py"), "photos")  # the U-Net, Adam 1e-3 cosine, EMA, batch 16, full-size photos
    c.noise = "none"
    c.target = "neighbor2neighbor"
    c.warmup_steps = 50
    c.num_epochs = 4
    c.steps_per_epoch = 200         # 800 steps x 16 patches of 64x64: ~10 minutes on CPU-2
    c.data.val_dir = ""             # required: a folder of real pairs (clean/, noisy/) to score on
    c.eval_every_epochs = 2
    c.checkpoint_every_steps = 200
    return c
