"""Waybill labels as the exit's document camera sees them: Code 128 symbols rendered with
python-barcode, stacked into one frame. Rendering is the slow part of a frame exit, so each
waybill's symbol is rendered once and cached (the week scenario relies on that)."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from PIL import Image


class WaybillRenderer:
    """Renders frames of one or more waybills; thread-safe, bounded cache."""

    def __init__(self, cache_size: int = 4096) -> None:
        self._cache: OrderedDict[str, Image.Image] = OrderedDict()
        self._lock = threading.Lock()
        self._size = cache_size

    def symbol(self, waybill: str) -> Image.Image:
        with self._lock:
            img = self._cache.get(waybill)
            if img is not None:
                self._cache.move_to_end(waybill)
                return img
        import barcode
        from barcode.writer import ImageWriter

        buf = io.BytesIO()
        barcode.get("code128", waybill, writer=ImageWriter()).write(
            buf, options={"module_width": 0.3, "module_height": 12.0, "quiet_zone": 6.0,
                          "font_size": 8, "text_distance": 4.0, "dpi": 200})
        img = Image.open(io.BytesIO(buf.getvalue())).convert("L")
        with self._lock:
            self._cache[waybill] = img
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return img

    def frame(self, waybills: list[str]) -> bytes:
        """One PNG with every waybill's label, one above the other on a white sheet."""
        symbols = [self.symbol(w) for w in waybills]
        width = max(s.width for s in symbols) + 80
        height = sum(s.height + 40 for s in symbols) + 40
        sheet = Image.new("L", (width, height), 255)
        y = 40
        for s in symbols:
            sheet.paste(s, (40, y))
            y += s.height + 40
        out = io.BytesIO()
        sheet.save(out, format="PNG")
        return out.getvalue()
