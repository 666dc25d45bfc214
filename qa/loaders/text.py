"""Plain text files, read as UTF-8 exactly as they are (Markdown too, see qa.loaders.markdown)."""

from __future__ import annotations

from qa.errors import DocumentError
from qa.loaders.base import Extracted, LoadOptions

__all__ = ["TextLoader", "binary_kind"]

_SNIFF_BYTES = 8192
# Signatures of binary formats people give text suffixes to, for a message that says what the file is.
_SIGNATURES = (
    (b"%PDF-", "a PDF"),
    (b"PK\x03\x04", "a zip archive (DOCX, XLSX, ...)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE file (legacy .doc/.xls, or an encrypted Office file)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "gzip-compressed data"),
)


def binary_kind(data: bytes) -> str | None:
    """What a binary file looks like ("a PDF", "binary data"), or None when it may be text."""
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if b"\x00" in data[:_SNIFF_BYTES]:
        return "binary data (contains NUL bytes)"
    return None


class TextLoader:
    """UTF-8 text (.txt): the file's characters are the document's text, byte order mark aside."""

    kind = "text"
    suffixes = (".txt", ".text")

    def sniff(self, data: bytes) -> bool:
        """Text is the fallback: anything that is not binary and decodes as UTF-8."""
        if binary_kind(data) is not None:
            return False
        try:
            data[:_SNIFF_BYTES].decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return exc.start > _SNIFF_BYTES - 4  # a character cut at the sniffing boundary
        return True

    def extract(self, data: bytes, options: LoadOptions) -> Extracted:
        """The file decoded as UTF-8."""
        if (kind := binary_kind(data)) is not None:
            raise DocumentError(f"looks like {kind}, not text")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DocumentError(
                f"not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); convert it to UTF-8"
            ) from exc
        if len(text) > options.max_document_chars:
            raise DocumentError(f"text is over {options.max_document_chars:,} characters (Settings.max_document_chars)")
        return Extracted(text)
