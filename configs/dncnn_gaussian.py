"""DnCNN-B (Zhang et al. 2017): a generic blind Gaussian denoiser, trained on patches of full-size photos.

    python scripts/train.py --config configs/dncnn_gaussian.py --workdir runs/dncnn_gaussian \
        --config.data.dir=/path/to/photos        # any folder of photos (e.g. shared/data/sun80), kept at full size

The paper's blind colour model: sigma drawn per image in [0, 55], residual learning, 20 layers of width 64
in the colour variant (17 here, the grey paper's depth: 557,443 parameters), random 64x64 patches of the
photos at their own size (longer side capped at 1024) with flips and rotations, Adam 1e-3 with cosine decay
(the paper: SGD with weight decay, lr 1e-1 -> 1e-4, batch 128, 50 epochs of 128x1600 patches: GPU work).
Validated on the central 256x256 of each validation photo at gaussian:25. The small CPU variant:
--config.model.depth=10 --config.model.width=32 (75,747 parameters, ~6x faster a step).

Measured 2026-11-28 on CPU-2 (2 cores; docs/quality.md), the small variant on shared/data/sun80 (77 train /
3 val photos after the 256 px short-side rule), 4 epochs x 500 steps (32,000 patches) in 14 min including the
preparation, on a CPU shared with a BM3D evaluation:
    --config.data.dir=shared/data/sun80 --config.model.depth=10 --config.model.width=32 --config.num_epochs=4
validation 29.57 dB (noisy 20.56) at gaussian:25; CBSD68 (first 20 images, full size): 28.95 dB at
gaussian:25 (BM3D 30.55, NLM 27.49), 27.98 dB at poisson:30 (BM3D 29.58). Far from DnCNN's published
31.24 at sigma 25: 80 JPEG photos and 14 CPU minutes, against 400 images x 50 epochs on a GPU.

Its first steps (issue 37 reported +0.18 dB over the noisy input after 60 steps at batch 8, against 3-5 dB for
the U-Net and NAFNet configs): not reproduced. 2026-12-07, CPU-2, `--config.data.dir=shared/data/bsds400
--config.batch_size=8 --config.num_epochs=1 --config.steps_per_epoch=60`: validation 21.67 dB (EMA; raw
21.33) against the noisy 20.57, +1.10 dB; configs/unet_photos.py under the same command +0.71 (20.88 against
20.17). A /tmp script with this optimiser on 64x64 built-in crops (60 steps, raw weights, 32 held-out crops
at gaussian:25): DnCNN +0.80, the U-Net's recipe +0.18, and DnCNN with a 10-step warm-up +0.01 (a fast start
stalls this plain 17-layer stack: the 100-step warm-up stays). Sixty steps say little about either model;
the equal-wall-time comparison (configs/photos.py) is the measure.
"""
import os

from jaxdenoise import models
from jaxdenoise.config import load_file


def get_config():
    c = load_file(os.path.join(os.path.dirname(__file__), "default.py"), "photos")  # Adam 1e-3 cosine, EMA, batch 16, full-size photos
    c.model = models.default_config("dncnn", depth=17, width=64)
    c.noise = "gaussian:0-55"
    c.eval_noise = "gaussian:25"
    c.warmup_steps = 100
    c.num_epochs = 10
    c.steps_per_epoch = 500
    c.data.val_fraction = 0.1
    c.eval_every_epochs = 5
    c.checkpoint_every_steps = 500
    return c
