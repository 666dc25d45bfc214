"""Documents, settings, prompts and the public surface: clear typed errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

import qa
from qa.answer import locate_quote
from qa.prompts import load_prompts


def test_public_api_is_explicit_and_sorted() -> None:
    assert qa.__all__ == sorted(qa.__all__, key=lambda n: (n.startswith("_"), n))
    for name in qa.__all__:
        assert hasattr(qa, name), name
    assert {"Answer", "Citation", "Document", "Index", "Settings", "ask", "load", "QAError"} <= set(qa.__all__)


def test_empty_question_and_documents(seed_doc: qa.Document, settings: qa.Settings) -> None:
    index = qa.Index([seed_doc], settings)
    for bad in ("", "   \n"):
        with pytest.raises(qa.InputError, match="question is empty"):
            index.ask(bad)
    with pytest.raises(qa.InputError, match="empty"):
        qa.Document(text="  \n\t ")
    with pytest.raises(qa.InputError, match="no documents"):
        qa.Index([], settings)
    with pytest.raises(qa.InputError, match="unique"):
        qa.Index([seed_doc, seed_doc], settings)


def test_document_defaults() -> None:
    d = qa.Document(text="hello")
    assert d.id.startswith("doc-") and dict(d.metadata) == {}
    with pytest.raises(AttributeError):
        d.text = "x"  # type: ignore[misc]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(qa.DocumentError, match="no such file"):
        qa.load(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(qa.DocumentError, match="directory has no"):
        qa.load(tmp_path / "empty")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(qa.DocumentError, match="binary"):
        qa.load(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(qa.DocumentError, match="not valid UTF-8 \\(byte 3"):
        qa.load(latin)
    sheet = tmp_path / "report.xlsx"
    sheet.write_bytes(b"PK\x03\x04")
    with pytest.raises(qa.DocumentError, match="unsupported file type '.xlsx'"):
        qa.load(sheet)
    blank = tmp_path / "blank.md"
    blank.write_text("\n\n", encoding="utf-8")
    with pytest.raises(qa.DocumentError, match="empty") as info:
        qa.load(blank)
    assert info.value.path == str(blank)


def test_load_folder_keeps_exact_text(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"line one\r\nline two\r\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# Title\n\nBody", encoding="utf-8")
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    docs = qa.load(tmp_path)
    assert [d.id for d in docs] == ["a.txt", "sub/b.md"]
    assert docs[0].text == "line one\r\nline two\r\n"


def test_settings_reject_unknown_and_bad_values() -> None:
    with pytest.raises(qa.ConfigurationError, match="unknown setting 'chunk_size'"):
        qa.Settings(chunk_size=3)  # type: ignore[call-arg]
    with pytest.raises(qa.ConfigurationError, match="chunk_overlap"):
        qa.Settings(chunk_tokens=64, chunk_overlap=64)
    with pytest.raises(qa.ConfigurationError):
        qa.Settings.from_env({}, top_k=0)


def test_settings_from_env() -> None:
    s = qa.Settings.from_env({"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://h/v1", "QA_MODEL": "m"})
    assert s.api_key is not None and s.api_key.get_secret_value() == "sk-x"
    assert (s.base_url, s.model, s.uses_local_model) == ("http://h/v1", "m", False)
    assert "sk-x" not in repr(s)
    local = qa.Settings.from_env({})
    assert local.uses_local_model and local.model_name == "local:default"
    assert local.effective_context_window == local.local_context_window
    assert local.max_context_tokens == 512 and local.evidence == "sentences"  # short, sharp prompts
    assert qa.Settings(api_key="k", model="gpt-4o-mini").effective_context_window == 128_000
    assert qa.Settings(api_key="k", model="my-model").effective_context_window == 8192


def test_prompts_are_files_checked_and_overridable(tmp_path: Path) -> None:
    prompts = load_prompts()
    assert "$" not in prompts.render("user", question="Q?", passages="[1] text", fence="passages-0")
    with pytest.raises(qa.ConfigurationError, match="unknown variable"):
        load_prompts({"user": "$question $passages $nonsense"})
    with pytest.raises(qa.ConfigurationError, match="must use"):
        load_prompts({"user": "only $question"})
    with pytest.raises(qa.ConfigurationError, match="unknown prompt"):
        load_prompts({"sytem": "x"})
    (tmp_path / "system.txt").write_text("Be brief. At most $max_citations quotes.", encoding="utf-8")
    assert load_prompts(tmp_path).render("system", max_citations=2) == "Be brief. At most 2 quotes."


def test_locate_quote() -> None:
    src = "He said: “It’s over.”\nThe  end —  really."
    assert locate_quote("It’s over.", src) == (10, 20, "exact")
    assert locate_quote('"It\'s over."', src) == (10, 20, "normalised")
    start, end, kind = locate_quote("the end - really", src) or (0, 0, "")
    assert src[start:end] == "The  end —  really" and kind == "normalised"
    assert locate_quote("not there", src) is None
    assert locate_quote("   ", src) is None


def test_fuzzy_quotes_need_near_identity_and_the_same_numbers(seed_text: str) -> None:
    near = (  # what Qwen2.5-0.5B actually quoted
        "The other soldier had been carrying a Russian military ID card in the name of a man from Tuva, "
        "a Russian region bordering Mongolia."
    )
    start, end, kind = locate_quote(near, seed_text, fuzzy=92) or (0, 0, "")
    assert kind == "fuzzy"
    assert seed_text[start:end].startswith("while the other had been carrying a Russian military ID card")
    assert locate_quote(near, seed_text) is None  # fuzzy matching is opt-in
    wrong_number = "Zelenskyy put the number of killed or wounded North Koreans at 40,000"
    assert locate_quote(wrong_number, seed_text, fuzzy=92) is None
    invented = "North Korea lost 9,000 soldiers in the Kursk region"
    assert locate_quote(invented, seed_text, fuzzy=92) is None
    assert locate_quote("the cat", "the dog and the bat", fuzzy=50) is None  # too short to match loosely
