"""Loader throughput and HTML main-text quality, in one process.

    python benchmarks/loaders.py                                    # PDF pages/s and HTML MB/s on generated files
    python benchmarks/loaders.py --html-dir PAGES --html-gold evaldata.json --html-limit 300

PDF: an fpdf2-made PDF of `--pdf-pages` text pages (every third one in two columns) is read by
- qa: `qa.loaders.PDFLoader().extract` (PDFium text per page, line-end hyphens rejoined, the location map built);
- pypdfium2 alone: open and `get_text_range()` per page, nothing else (the floor for qa's loader);
- pypdf: `PdfReader(...).pages[i].extract_text()` (pure Python), when installed.
HTML: saved pages read by
- qa: `qa.loaders.HTMLLoader().extract` (trafilatura main text with favor_recall, sections);
- raw text: lxml's parse and `text_content()` of the whole page (everything a page contains);
- trafilatura's `extract()` (its own text output), and qa's loader with trafilatura's default balance and
  `favor_precision`, for the quality table.
With `--html-gold` (trafilatura's evaluation set: for each page, snippets of main text that must be kept, "with",
and of boilerplate that must not, "without"), each reader is scored on the share of "with" snippets its text
contains and the share of "without" snippets it leaves out (whitespace folded). Without a gold file, HTML
throughput is measured on generated news pages. Every method runs `--rounds` times round-robin; the best and the
median round are reported. MB = 10^6 bytes of the files as stored.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import machine, versions  # noqa: E402

from qa.loaders import HTMLLoader, LoadOptions, PDFLoader  # noqa: E402


def make_pdf(pages: int) -> bytes:
    """`pages` pages of report-like text, every third page in two columns."""
    from fpdf import FPDF

    sentence = (
        "The committee reviewed the quarterly figures for each region and found that spending on maintenance "
        "rose by 4.2 percent while revenue from fees stayed level. "
    )
    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for n in range(pages):
        pdf.add_page()
        if n % 3 == 2:
            with pdf.text_columns(ncols=2, gutter=8) as columns:
                columns.write(f"Page {n + 1}. " + sentence * 14)
        else:
            pdf.multi_cell(0, 5, f"Page {n + 1}. " + sentence * 16, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def pdfium_only(data: bytes) -> int:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(data)
    chars = 0
    for i in range(len(pdf)):
        page = pdf[i]
        textpage = page.get_textpage()
        chars += len(textpage.get_text_range())
        textpage.close()
        page.close()
    pdf.close()
    return chars


def pypdf_only(data: bytes) -> int:
    import io

    import pypdf

    reader = pypdf.PdfReader(io.BytesIO(data))
    return sum(len(page.extract_text()) for page in reader.pages)


def raw_text(data: bytes) -> str:
    import lxml.html

    return str(lxml.html.document_fromstring(data).text_content())


def trafilatura_text(data: bytes, **options: Any) -> str:
    import trafilatura

    return trafilatura.extract(data, include_comments=False, include_tables=True, **options) or ""


def rounds(methods: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Seconds per round for each method, run round-robin so a load on the machine hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(n):
        for name, run in methods.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def fold(text: str) -> str:
    return " ".join(text.split())


def html_quality(pages: list[tuple[bytes, dict[str, Any]]], readers: dict[str, Callable[[bytes], str]]) -> dict[str, Any]:
    """Share of gold "with" snippets kept and "without" snippets left out, per reader, over all snippets."""
    out: dict[str, Any] = {}
    for name, read in readers.items():
        kept = kept_of = left = left_of = empty = 0
        for data, gold in pages:
            try:
                text = fold(read(data))
            except Exception:  # noqa: BLE001 - a page the reader refuses counts as empty
                text = ""
            empty += not text
            kept += sum(fold(s) in text for s in gold.get("with", []))
            kept_of += len(gold.get("with", []))
            left += sum(fold(s) not in text for s in gold.get("without", []))
            left_of += len(gold.get("without", []))
        out[name] = {
            "main_text_kept": kept / kept_of, "boilerplate_left_out": left / left_of,
            "with_snippets": kept_of, "without_snippets": left_of, "pages_empty": empty,
        }  # fmt: skip
    return out


def qa_html(data: bytes) -> str:
    return HTMLLoader().extract(data, LoadOptions()).text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pdf-pages", type=int, default=300)
    p.add_argument("--html-dir", type=Path, help="folder of saved pages (trafilatura's tests/eval and tests/cache)")
    p.add_argument("--html-gold", type=Path, help="trafilatura's tests/evaldata.json")
    p.add_argument("--html-limit", type=int, default=300, help="pages of the gold file used (in its order)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=HERE / "out" / "loaders.json")
    args = p.parse_args()

    results: dict[str, Any] = {"machine": machine(), "versions": versions(
        "trafilatura", "lxml", "pypdfium2", "pypdf", "python-docx", "fpdf2"
    ), "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip

    # --- PDF ---
    pdf = make_pdf(args.pdf_pages)
    loader, options = PDFLoader(), LoadOptions()
    pdf_methods: dict[str, Callable[[], object]] = {
        "qa": lambda: loader.extract(pdf, options), "pypdfium2 alone": lambda: pdfium_only(pdf),
    }  # fmt: skip
    try:
        import pypdf  # noqa: F401

        pdf_methods["pypdf"] = lambda: pypdf_only(pdf)
    except ImportError:
        pass
    times = rounds(pdf_methods, args.rounds)
    results["pdf"] = {
        "pages": args.pdf_pages, "bytes": len(pdf),
        "pages_per_s": {k: {"best": args.pdf_pages / min(v), "median": args.pdf_pages / statistics.median(v)}
                        for k, v in times.items()},
    }  # fmt: skip
    base = min(times["pypdfium2 alone"])
    results["pdf"]["qa_vs_pypdfium2_alone"] = base / min(times["qa"])

    # --- HTML ---
    if args.html_gold and args.html_dir:
        gold = json.loads(args.html_gold.read_text(encoding="utf-8"))
        pages = []
        for entry in gold.values():
            path = args.html_dir / entry["file"]
            if path.is_file():
                pages.append((path.read_bytes(), entry))
            if len(pages) >= args.html_limit:
                break
        source = f"{len(pages)} saved pages of trafilatura's evaluation set"
    else:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from documents import html_page  # the tests' news page

        pages = [(html_page().replace("Bridge survey", f"Bridge survey {i}").encode(), {}) for i in range(300)]
        source = "300 generated news pages"
    total = sum(len(d) for d, _ in pages)

    def each(read: Callable[[bytes], object]) -> Callable[[], None]:
        def run() -> None:
            for data, _ in pages:
                try:
                    read(data)
                except Exception:  # noqa: BLE001,S112 - refused pages cost their time all the same
                    continue
        return run

    times = rounds({"qa": each(qa_html), "raw text (lxml)": each(raw_text),
                    "trafilatura.extract": each(trafilatura_text)}, args.rounds)  # fmt: skip
    results["html"] = {
        "source": source, "pages": len(pages), "megabytes": total / 1e6,
        "mb_per_s": {k: {"best": total / 1e6 / min(v), "median": total / 1e6 / statistics.median(v)}
                     for k, v in times.items()},
    }  # fmt: skip
    if pages and pages[0][1]:
        results["html"]["quality"] = html_quality(pages, {
            "qa (trafilatura, favor_recall)": qa_html,
            "qa, balanced": lambda d: HTMLLoader("balanced").extract(d, LoadOptions()).text,
            "qa, favor_precision": lambda d: HTMLLoader("precision").extract(d, LoadOptions()).text,
            "trafilatura.extract": trafilatura_text,
            "raw text (lxml)": raw_text,
        })  # fmt: skip

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in results.items() if k not in ("machine", "args")}, indent=2))


if __name__ == "__main__":
    main()
