"""Reading files into Documents: one loader per file type behind the `Loader` protocol, chosen by suffix, then by
content for a file without one; bad files become typed DocumentErrors naming the file and the reason."""

from qa.loaders.base import Extracted, Loader, LoadOptions
from qa.loaders.docx import DOCXLoader
from qa.loaders.html import HTMLLoader
from qa.loaders.markdown import MarkdownLoader
from qa.loaders.loading import LOADERS, LoadResult, iter_load, load, loader_for, supported_suffixes
from qa.loaders.pdf import PDFLoader
from qa.loaders.text import TextLoader

__all__ = [
    "DOCXLoader",
    "Extracted",
    "HTMLLoader",
    "LOADERS",
    "LoadOptions",
    "LoadResult",
    "Loader",
    "MarkdownLoader",
    "PDFLoader",
    "TextLoader",
    "iter_load",
    "load",
    "loader_for",
    "supported_suffixes",
]
