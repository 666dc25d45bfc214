"""PDF files: the text layer of each page (PDFium, through pypdfium2), words split at line ends rejoined."""

from __future__ import annotations

from qa.errors import DocumentError
from qa.loaders.base import Extracted, LoadOptions, TextBuilder, missing_package, one_line

__all__ = ["PDFLoader", "page_texts"]

# PDFium's error code for a missing or wrong password (FPDF_ERR_PASSWORD).
_ERR_PASSWORD = 4
# PDFium marks a hyphen it found at a line end, where a word was split, as U+FFFE (U+0002 in older builds)
# and joins the two lines; dropping the mark gives the word a reader sees.
_LINE_END_HYPHENS = str.maketrans({"\ufffe": None, "\x02": None})


def page_texts(data: bytes, password: str | None = None) -> list[str]:
    """Each page's text as PDFium reads it, line breaks as \\n, words split at line ends rejoined."""
    try:
        import pypdfium2
    except ImportError as exc:
        raise missing_package("pypdfium2", "PDF") from exc
    try:
        pdf = pypdfium2.PdfDocument(data, password=password)
    except pypdfium2.PdfiumError as exc:
        if getattr(exc, "err_code", None) == _ERR_PASSWORD:
            if password is None:
                raise DocumentError(
                    "the PDF is encrypted: give its password (Settings.pdf_password, env QA_PDF_PASSWORD)"
                ) from exc
            raise DocumentError("the PDF is encrypted and the password given does not open it") from exc
        reason = one_line(str(exc)).removeprefix("Failed to load document").strip(" ().")
        raise DocumentError(f"not a readable PDF (corrupt or truncated?): {reason}") from exc
    try:
        texts = []
        for index in range(len(pdf)):
            page = pdf[index]
            try:
                textpage = page.get_textpage()
                try:
                    raw = textpage.get_text_range()
                finally:
                    textpage.close()
            finally:
                page.close()
            texts.append(raw.replace("\r\n", "\n").replace("\r", "\n").translate(_LINE_END_HYPHENS))
        return texts
    finally:
        pdf.close()


class PDFLoader:
    """PDF (.pdf): one block per page, each with its page number (1-based)."""

    kind = "PDF"
    suffixes = (".pdf",)

    def sniff(self, data: bytes) -> bool:
        """A file with a PDF header in its first kilobyte (where PDF readers look for it)."""
        return b"%PDF-" in data[:1024]

    def extract(self, data: bytes, options: LoadOptions) -> Extracted:
        """The pages' text in order; pages without text are skipped but keep their numbers."""
        texts = page_texts(data, options.password)
        builder = TextBuilder(options.max_document_chars)
        for number, text in enumerate(texts, 1):
            builder.add(text, page=number)
        if builder.empty:
            raise DocumentError(
                f"no extractable text in {len(texts)} page(s) — scanned? OCR is not supported"
            )
        return builder.build({"pages": len(texts)})
