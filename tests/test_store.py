"""One conformance suite run against every Store backend (a new backend joins the `store` fixture's params)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import qa
from qa.chunking import chunk_documents
from qa.documents import Location
from qa.store import Entry, Known, Source, Store, StoreStats, open_store, text_sha256
from qa.store.memory import MemoryStore
from qa.store.sqlite import SQLiteStore
from qa.tokens import get_encoding

ENC = get_encoding("o200k_base")
TEXTS = {
    "oil.txt": "Oil prices rose sharply in March.\n\nBrent crude reached 120 dollars a barrel as supply fell.",
    "grain.txt": "Wheat harvests failed across the region. Grain prices doubled; bakers raised bread prices.",
    "ships.txt": "Container ships waited outside the port for weeks. Freight rates for ships tripled. " * 30,
    "greek.txt": "Η Αθήνα είναι η πρωτεύουσα. Σοκολάτα ΟΔΥΣΣΕΥΣ naïve café façade_x snake_case words.",
}


def entries(texts: dict[str, str], source: Source | None = None, **metadata: object) -> list[Entry]:
    docs = [qa.Document(text=t, id=i, metadata=metadata) for i, t in texts.items()]
    chunked = chunk_documents([(d.id, d.text) for d in docs], encoding=ENC, chunk_tokens=32, overlap_tokens=4)
    return [Entry(d, c, source) for d, c in zip(docs, chunked, strict=True)]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "index.sqlite")
    yield made
    made.close()


def test_documents_round_trip_whole(store: Store) -> None:
    store.add(entries(TEXTS, Source("/data/x.txt", 10, 7), kind="report", pages=[1, 2]))
    assert len(store) == 4
    assert [d.id for d in store] == list(TEXTS)
    for doc_id, text in TEXTS.items():
        stored = store.get(doc_id)
        assert stored is not None
        assert stored.length == len(text) and stored.sha256 == text_sha256(text)
        assert dict(stored.metadata) == {"kind": "report", "pages": [1, 2]}
        assert stored.source == Source("/data/x.txt", 10, 7)
        assert store.text(doc_id) == text
        chunks = store.chunks(doc_id)
        assert stored.chunks == len(chunks) > 0
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert all(c.text == text[c.start : c.end] and c.document_id == doc_id for c in chunks)
    assert store.get("nope") is None
    with pytest.raises(KeyError):
        store.text("nope")
    with pytest.raises(KeyError):
        store.chunks("nope")


def test_documents_keep_their_metadata_and_locations(store: Store) -> None:
    doc = qa.Document(
        text=TEXTS["oil.txt"], id="oil.pdf", metadata={"path": "/r/oil.pdf", "pages": 2},
        locations=(Location(0, page=1, section="Prices"), Location(35, page=2, section="Prices › Brent")),
    )  # fmt: skip
    store.add(entries({}) + [Entry(doc, entries({"oil.pdf": doc.text})[0].chunks)])
    assert store.document("oil.pdf") == doc
    assert store.document("oil.pdf").location_at(40) == Location(35, 2, "Prices › Brent")
    with pytest.raises(KeyError):
        store.document("nope")


def test_stats_count_documents_chunks_and_tokens(store: Store) -> None:
    assert store.stats() == StoreStats(0, 0, 0)
    made = entries(TEXTS)
    store.add(made)
    assert store.stats() == StoreStats(4, sum(len(e.chunks) for e in made), sum(c.tokens for e in made for c in e.chunks))


def test_adding_an_id_again_replaces_the_document(store: Store) -> None:
    store.add(entries(TEXTS))
    store.add(entries({"oil.txt": "Gas prices fell in April."}))
    assert len(store) == 4 and store.text("oil.txt") == "Gas prices fell in April."
    assert not [h for h in store.search("Brent crude", 5) if h.chunk.document_id == "oil.txt"]
    assert store.search("gas april", 1)[0].chunk.document_id == "oil.txt"


def test_remove_takes_text_chunks_and_terms(store: Store) -> None:
    store.add(entries(TEXTS))
    assert store.remove(["oil.txt", "unknown"]) == 1
    assert store.remove([]) == 0
    assert len(store) == 3 and store.get("oil.txt") is None
    assert store.search("brent crude barrel", 5) == []
    assert store.search("grain", 5)[0].chunk.document_id == "grain.txt"


def test_search_ranks_chunks_by_bm25(store: Store) -> None:
    store.add(entries(TEXTS))
    hits = store.search("Why did wheat and grain prices rise?", 3)
    assert hits and hits[0].chunk.document_id == "grain.txt"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True) and hits[-1].score > 0
    for h in hits:
        assert h.chunk.text == store.text(h.chunk.document_id)[h.chunk.start : h.chunk.end]
        assert h.chunk in store.chunks(h.chunk.document_id)
    assert len(store.search("ships freight", 2)) == 2
    assert store.search("the and of", 5) == []  # stop words only
    assert store.search("zebra", 5) == []
    assert store.search("ships", 0) == []


def test_search_reads_words_as_bm25s_does(store: Store) -> None:
    store.add(entries(TEXTS))
    assert store.search("SHIPPING", 1)[0].chunk.document_id == "ships.txt"  # case folded, stemmed
    assert store.search("αθήνα", 1)[0].chunk.document_id == "greek.txt"  # non-ASCII words
    assert store.search("σοκολάτα", 1)[0].chunk.document_id == "greek.txt"  # final sigma
    assert store.search("snake_case", 1)[0].chunk.document_id == "greek.txt"  # "_" is a word character
    assert store.search('"OR" NEAR(', 1) == []  # FTS5 syntax in a question is just words


def test_set_source_and_meta(store: Store) -> None:
    store.add(entries({"oil.txt": TEXTS["oil.txt"]}))
    store.set_source("oil.txt", Source("/a/oil.txt", 3, 4))
    stored = store.get("oil.txt")
    assert stored is not None and stored.source == Source("/a/oil.txt", 3, 4)
    assert store.get_meta("chunking") is None
    store.set_meta("chunking", "x")
    store.set_meta("chunking", "y")
    assert store.get_meta("chunking") == "y"


def test_known_lists_ids_hashes_and_files_as_iteration_does(store: Store) -> None:
    assert list(store.known()) == []
    store.add(entries({"oil.txt": TEXTS["oil.txt"]}, Source("/a/oil.txt", 3, 4), kind="news"))
    store.add(entries({"grain.txt": TEXTS["grain.txt"]}))
    store.add(entries({"oil.txt": "Gas prices fell in April."}, Source("/a/oil.txt", 5, 6)))  # replaced: now newest
    known = list(store.known())
    assert known == [
        Known("grain.txt", text_sha256(TEXTS["grain.txt"]), None),
        Known("oil.txt", text_sha256("Gas prices fell in April."), Source("/a/oil.txt", 5, 6)),
    ]
    assert known == [Known(d.id, d.sha256, d.source) for d in store]
    store.remove(["grain.txt"])
    assert [k.id for k in store.known()] == ["oil.txt"]


def test_metadata_that_is_not_json_is_refused_with_its_document(store: Store) -> None:
    if isinstance(store, MemoryStore):
        pytest.skip("the in-memory store keeps metadata objects as they are")
    with pytest.raises(qa.InputError, match="'oil.txt': metadata cannot be stored as JSON"):
        store.add(entries({"oil.txt": TEXTS["oil.txt"]}, when=object()))
    assert len(store) == 0


def test_open_store(tmp_path: Path) -> None:
    assert isinstance(open_store(), MemoryStore)
    opened = open_store(tmp_path / "sub" / "x.sqlite")
    assert isinstance(opened, SQLiteStore) and opened.path == tmp_path / "sub" / "x.sqlite"
    opened.close()
