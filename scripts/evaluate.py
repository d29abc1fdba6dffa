"""Evaluate a trained run from its workdir: a table of PSNR/SSIM per noise spec, model vs noisy vs baselines.

    python scripts/evaluate.py --workdir runs/x [--checkpoint best|latest|STEP] [--data DIR]
        [--noise poisson:30 --noise gaussian:25] [--baselines bm3d,nlm] [--json out.json] [--resize 128]
    python scripts/evaluate.py --workdir runs/x --data CLEAN_DIR --noisy NOISY_DIR --baselines bm3d,nlm
        (real noise: each noisy photo against the clean reference of the same name; baselines estimate
        the noise level from the image)

The table is printed first; a comparison grid that cannot be written (a read-only workdir) is a warning.
--json and --grid are checked before any work: never an input (--data, --noisy) or a file a training run owns
(config.json, checkpoints, ...), and an existing file only with --overwrite.
"""
from jaxdenoise.commands import evaluate

if __name__ == "__main__":
    evaluate.run()
