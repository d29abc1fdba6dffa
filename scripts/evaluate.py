"""Evaluate a trained run from its workdir: a table of PSNR/SSIM per noise spec, model vs noisy vs baselines.

The command-line entry point of a checkout; its flags, usage and behaviour: jaxdenoise/commands/evaluate.py
(installed: ``jaxdenoise evaluate``).
"""
from jaxdenoise.commands import evaluate

if __name__ == "__main__":
    evaluate.run()
