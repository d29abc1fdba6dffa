"""Denoise your own photos with a trained run: any size and format, tiled when large.

    python scripts/denoise.py --workdir runs/x --input PATH [--output DIR] [--tile 1024 --overlap 32] [--batch 8]
        [--keep-format] [--overwrite] [--noise-level poisson:30]

Output names, formats and the no-clobber rules: ``jaxdenoise.denoise_files.denoise_paths``.
"""
from jaxdenoise.commands import denoise

if __name__ == "__main__":
    denoise.run()
