"""The mark jaxdenoise leaves in every file a command writes where a user named it, and the test for it.

``--overwrite`` replaces only a file that carries the mark (``outputs.claim``): a file someone else wrote, or
one of ours that a person rewrote without it, is never replaced. The mark travels inside the file:

- JSON: a top-level ``"written_by": "jaxdenoise"`` (a list of rows is written as ``{"written_by": ...,
  "rows": [...]}``, ``json_text``);
- PNG: a ``Software`` text chunk ``jaxdenoise`` (``png_info``; matplotlib's ``metadata``);
- other image formats written through ImageMagick (JPEG, TIFF, WebP, GIF): the image comment ``COMMENT``;
- an exported model (``.jaxdn``): its ``info.json`` header's ``format`` (``EXPORT_FORMAT``);
- a model card (``MODEL_CARD.md``): its first line (``CARD_MARKER``).

Formats that hold no text (BMP, PPM, ...) cannot carry it: such an output is never replaced.
"""
from __future__ import annotations

import json
import struct
import zipfile
from typing import Any

WRITER = "jaxdenoise"
COMMENT = "written by jaxdenoise"
EXPORT_FORMAT, EXPORT_HEADER = "jaxdenoise-export-1", "info.json"  # an exported model's header and its format
CARD_MARKER = "<!-- model card written by jaxdenoise: rewritten after training and each evaluate.py run -->"  # a model card's first line


def json_text(obj: Any) -> str:
    """``obj`` (a dict, or a list of rows) as marked JSON text (``allow_nan`` off: NaN is not JSON)."""
    doc = dict(obj, written_by=WRITER) if isinstance(obj, dict) else {"written_by": WRITER, "rows": list(obj)}
    return json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n"


def png_info():
    """A ``PIL.PngImagePlugin.PngInfo`` carrying the mark (pass as ``pnginfo=`` to ``Image.save``)."""
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text("Software", WRITER)
    return info


PNG_METADATA = {"Software": WRITER}  # matplotlib's savefig(..., metadata=PNG_METADATA)


def _png_marked(head: bytes) -> bool:
    pos = 8
    while pos + 8 <= len(head):
        length, kind = struct.unpack(">I4s", head[pos:pos + 8])
        body = head[pos + 8:pos + 8 + length]
        if kind in (b"tEXt", b"iTXt"):
            key, _, value = body.partition(b"\0")
            text = value.split(b"\0")[-1] if kind == b"iTXt" else value
            if (key == b"Software" and text.startswith(WRITER.encode())) or COMMENT.encode() in text:
                return True
        if kind in (b"IDAT", b"IEND"):
            return False
        pos += 12 + length
    return False


def ours(path: str) -> bool:
    """Whether the file at ``path`` carries jaxdenoise's mark (False for anything unreadable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return False
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_marked(head)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read(EXPORT_HEADER)).get("format") == EXPORT_FORMAT
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, AttributeError):
            return False
    stripped = head.lstrip()
    if stripped.startswith(b"{"):
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and doc.get("written_by") == WRITER
    if head.startswith(CARD_MARKER.encode()):
        return True
    return COMMENT.encode() in head  # JPEG's COM segment, TIFF's description, WebP / GIF comments
