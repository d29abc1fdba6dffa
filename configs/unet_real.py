"""A blind U-Net for real photos: clean generic photos with synthetic camera-pipeline noise.

    python scripts/train.py --config configs/unet_real.py --workdir runs/unet_real \
        --config.data.dir=/path/to/bsds400,/path/to/sun80

Real noise in an sRGB photo is sensor noise carried through a camera's processing (demosaicing correlates
it, white balance and colour correction scale it per channel, the tone curve makes it signal dependent, and
the camera saves a JPEG): ``camera`` noise (jaxdenoise/camera.py, after Brooks et al. 2019) unprocesses each
clean patch to a raw mosaic of a camera drawn per image, adds shot and read noise at an ISO-like level drawn
log-uniform in 50-6400, processes it back and quantises to 8 bits. A third of the draws then go through a
JPEG of quality 60-100 (``camera:50-6400,60-100``, CBDNet's last stage; jaxdenoise/jpeg.py), a third stay
camera noise, a third are white Gaussian noise (sigma 2-50, clipped), so that the model still removes plain
synthetic noise. The rest is configs/unet_photos.py's recipe: full-size photos (each folder split 90/10),
random 64x64 patches with flips and rotations, residual U-Net 32/64/128 (518,563 parameters), Adam 1e-3,
cosine decay, EMA 0.999, validated at camera:800 on the central 256x256 of the validation photos.

The ISO range: real_nam25's pairs (Nam et al. 2016; noisy 37.06 dB, noise std 3.9/2.7/3.9 per channel in
0-255 units, neighbour correlation 0.70) sit at camera:100 here (38.7 dB, 3.7/2.4/2.7, correlation 0.56);
camera:800-3200 (30-24 dB) covers the heavier ISO 1600-6400 sets (DND, SIDD) the model is also judged on.

Measured 2026-12-04 on CPU-2 (2-core Intel Xeon), the command above on shared/data/bsds400,sun80 (439 train /
41 val): 9,000 steps in 55.1 min wall, alone on the cores; validation (41 photos, central 256x256, camera:800,
noisy 30.05) 36.12 / 37.10 dB after epochs 5 / 10. real_nam25 (25 real pairs, full 512x512): 40.56 dB / SSIM
0.972, every pair improved (worst +1.39 dB); noisy 37.06; BM3D 37.21 and NLM 37.19 at the estimated sigma, 38.67
and 40.99 at the true sigma; the face U-Net trained on white synthetic noise 39.14; this config without the
JPEG stage (2026-12-03) 38.22. CBSD68: 29.90 dB at gaussian:25:noclip, 29.35 at poisson:30:noclip, 32.46 at
camera:1600,80 (noisy 29.53). docs/quality.md, "Real noise". Shipped as the zoo model "real".
"""
import os

from jaxdenoise.config import load_file


def get_config():
    c = load_file(os.path.join(os.path.dirname(__file__), "unet_photos.py"))
    c.noise = "camera:50-6400,60-100+camera:50-6400+gaussian:2-50"
    c.eval_noise = "camera:800"
    c.num_epochs = 10
    c.steps_per_epoch = 900         # 9,000 steps x 16 patches of 64x64: ~50 minutes on CPU-2
    c.eval_every_epochs = 5
    c.checkpoint_every_steps = 450
    return c
