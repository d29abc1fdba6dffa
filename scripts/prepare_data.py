"""Prepare a folder of images into a jaxdenoise store (PNG folder, packed uint8 arrays, manifest.json).

    python scripts/prepare_data.py --src ~/photos --out data/faces128 [--size 128] [--val-fraction 0.2]

--out must be a new or empty folder, or a store this script wrote (it is then replaced whole, only once the
new one is complete); --src is never written.
"""
from jaxdenoise.commands import prepare

if __name__ == "__main__":
    prepare.run()
