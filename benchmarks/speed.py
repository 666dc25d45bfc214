"""Speed of the local path: raw llama.cpp vs qa's in-process engine, and qa ask as a user runs it.

    python benchmarks/speed.py raw      # llama.cpp's own prompt and generation tokens/s, and qa's engine on the same
    python benchmarks/speed.py ask --baseline d5b0eee   # `qa ask` from process start vs that revision, first
                                                        # streamed text, follow-up, cached repeat, ask_many

`raw` evaluates the example question's real prompt (~640 tokens) with llama.cpp's low-level calls through
llama-cpp-python (`Llama.eval`, greedy `Llama.sample`) and generates 64 tokens, then sends the same prompt through
qa's in-process OpenAI bridge (JSON-schema grammar and logprobs, as `qa ask` sends it), streamed, so the time to the
first token (prompt processing) and the rest (generation) are measured apart. Every figure is the median of --repeat
runs, all in this one process on the same build.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
QUESTION = "How many casualties?"


def _example_request(threads: int) -> tuple[Any, dict[str, Any]]:
    """The engine and the exact chat request qa sends for the example question."""
    import qa
    from qa.llm import OpenAILLM
    from qa.local import get_engine

    settings = qa.Settings.from_env(local_threads=threads, cache=False)
    with qa.Index.from_paths([EXAMPLES], settings) as index:
        request = next(index._flow(QUESTION, str))
        kwargs = OpenAILLM(settings, index.prompts)._kwargs(request, "json_schema")
    return get_engine(n_threads=threads, state_cache_bytes=0), kwargs


def _raw(engine: Any, prompt_tokens: list[int], n_gen: int) -> tuple[float, float]:
    """llama.cpp alone: prompt tokens/s from an empty KV cache, then greedy generation tokens/s."""
    llama = engine.llama
    llama.reset()
    llama._ctx.kv_cache_clear()
    started = time.perf_counter()
    llama.eval(prompt_tokens)
    prompt_s = time.perf_counter() - started
    low = engine.llama_cpp
    n_vocab = llama.n_vocab()
    started = time.perf_counter()
    for _ in range(n_gen):  # greedy: the argmax of the last logits, no sampler object
        logits = np.ctypeslib.as_array(low.llama_get_logits_ith(llama._ctx.ctx, -1), shape=(n_vocab,))
        llama.eval([int(np.argmax(logits))])
    gen_s = time.perf_counter() - started
    llama.reset()
    llama._ctx.kv_cache_clear()
    return len(prompt_tokens) / prompt_s, n_gen / gen_s


def _through_qa(engine: Any, kwargs: dict[str, Any]) -> tuple[float, float, int, int, str]:
    """qa's in-process bridge, streamed: prompt tokens / time to first token, later tokens / the rest, and the reply."""
    from qa.local.bridge import _sync_client

    engine.llama.reset()
    engine.llama._ctx.kv_cache_clear()
    engine.forget_prefixes()
    client = _sync_client(engine, 600)
    started = time.perf_counter()
    first = last = 0.0
    chunks = 0
    usage = None
    text: list[str] = []
    for chunk in client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        now = time.perf_counter()
        if chunk.choices and chunk.choices[0].delta.content:
            if not first:
                first = now
            chunks += 1
            last = now
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    client.close()
    assert usage is not None
    gen_tokens = usage.completion_tokens
    prompt_tps = usage.prompt_tokens / (first - started)
    return prompt_tps, (gen_tokens - 1) / (last - first), usage.prompt_tokens, gen_tokens, "".join(text)


def _weight_buffers(model: Path) -> list[str]:
    """llama.cpp's own report of the model's weight buffers, from a verbose load in a child process.

    A build that keeps the repacked Q4 kernels lists a "CPU_REPACK model buffer"; one without them only "CPU".
    """
    code = (
        "import sys, llama_cpp\n"
        "llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True)
    lines = (done.stdout + done.stderr).splitlines()
    return [line.strip() for line in lines if "model buffer size" in line or "REPACK" in line]


def run_raw(args: argparse.Namespace) -> dict[str, Any]:
    engine, kwargs = _example_request(args.threads)
    llama = engine.llama
    prompt = engine.format_prompt(kwargs["messages"])
    tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    raw, ours = [], []
    for _ in range(args.repeat):  # interleaved, so a change in the machine's load touches both alike
        raw.append(_raw(engine, tokens, args.gen_tokens))
        ours.append(_through_qa(engine, kwargs))
    result = {
        "threads": args.threads,
        "prompt_tokens": len(tokens),
        "raw_prompt_tps": statistics.median(r[0] for r in raw),
        "raw_gen_tps": statistics.median(r[1] for r in raw),
        "qa_prompt_tps": statistics.median(r[0] for r in ours),
        "qa_gen_tps": statistics.median(r[1] for r in ours),
        "qa_completion_tokens": ours[0][3],
        "qa_reply": ours[0][4],
        "system_info": llama_system_info(),
        "extra_buffers": engine.extra_buffers,
        "weight_buffers": _weight_buffers(engine.model_path),
    }
    result["repacked"] = any("CPU_REPACK" in line for line in result["weight_buffers"])
    result["prompt_ratio"] = result["qa_prompt_tps"] / result["raw_prompt_tps"]
    result["gen_ratio"] = result["qa_gen_tps"] / result["raw_gen_tps"]
    result["prompt_ratio_median_of_pairs"] = statistics.median(o[0] / r[0] for r, o in zip(raw, ours, strict=True))
    result["gen_ratio_median_of_pairs"] = statistics.median(o[1] / r[1] for r, o in zip(raw, ours, strict=True))
    result["raw_runs"] = [[round(x, 1) for x in r] for r in raw]
    result["qa_runs"] = [[round(x, 1) for x in o[:2]] for o in ours]
    result["load_average"] = os.getloadavg()
    return result


FOLLOW_UPS = [
    "Where was the ID card holder from?",
    "Who captured the soldiers?",
    "What did the soldiers say about the war?",
    "How old was the soldier?",
    "What language did the soldiers speak?",
    "Where were the soldiers taken?",
    "What did Zelenskyy offer?",
    "Which intelligence service confirmed the capture?",
    "When were the soldiers captured?",
    "What was found on the soldier?",
    "How many North Korean troops were sent to Russia?",
    "What did the soldier believe he was doing?",
    "Who published the interrogation video?",
    "What were the soldiers' injuries?",
    "Where is the Kursk region?",
    "What did South Korea's lawmakers say?",
    "Who were the soldiers fighting for?",
    "What document did the soldier carry?",
    "What happened to other North Korean soldiers?",
]


def _timed_cli(python: str, env: dict[str, str], args: list[str], cwd: Path = ROOT) -> tuple[float, int, str]:
    """`qa ask` run as a user runs it, from process start; peak RSS of that process from its rusage."""
    code = (
        "import resource, sys, runpy; sys.argv = ['qa', *sys.argv[1:]]\n"
        "from qa.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    started = time.perf_counter()
    done = subprocess.run([python, "-c", code, *args], env=env, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"qa {' '.join(args)} failed: {done.stderr[-2000:]}")
    rss = int(done.stderr.rsplit("PEAK_RSS_KIB", 1)[1].split()[0])
    return wall, rss, done.stdout


def _first_text_seconds(python: str, env: dict[str, str], question: str = QUESTION, cache: bool = False) -> float:
    """From process start to the first streamed answer text, in a fresh process."""
    code = (
        "import time, sys; t0 = time.time()\n"
        "import qa\n"
        f"index = qa.Index.from_paths([{str(EXAMPLES)!r}], qa.Settings.from_env(cache={cache!r}))\n"
        f"for event in index.stream({question!r}):\n"
        "    if isinstance(event, qa.TextDelta):\n"
        "        print('FIRST', time.time() - t0); sys.stdout.flush(); break\n"
    )
    done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0 or "FIRST" not in done.stdout:
        raise SystemExit(f"streaming failed: {done.stderr[-2000:]}")
    return float(done.stdout.split("FIRST")[1].split()[0])  # from the script's first line (after ~30 ms start-up)


def _baseline_tree(rev: str) -> Path:
    """The code of `rev`, unpacked into a temporary directory (git archive), to run beside this checkout."""
    target = Path(tempfile.mkdtemp(prefix=f"qa-baseline-{rev[:8]}-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def run_ask(args: argparse.Namespace) -> dict[str, Any]:
    python = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "QA_"))}
    from qa.local import default_model_path

    model = default_model_path()  # joined and checked once, outside the timings
    env["QA_LOCAL_MODEL"] = str(model)

    def fresh() -> dict[str, str]:
        """The environment with an empty cache directory of its own."""
        return {**env, "QA_CACHE_DIR": tempfile.mkdtemp(prefix="qa-speed-cache-")}

    cold_env = fresh()
    result: dict[str, Any] = {"load_average_before": os.getloadavg()}
    # 1. `qa ask` with nothing cached (--no-cache: no index file, no reply cache, no KV states on disk)
    ours = [_timed_cli(python, cold_env, ["ask", QUESTION, str(EXAMPLES), "--no-cache"]) for _ in range(args.repeat)]
    result["cold_ask_seconds"] = [round(w, 2) for w, _, _ in ours]
    result["cold_ask_peak_rss_mib"] = round(max(r for _, r, _ in ours) / 1024)
    result["cold_ask_output"] = ours[0][2].strip()
    if args.baseline:
        tree = _baseline_tree(args.baseline)
        base_env = {**fresh(), "PYTHONPATH": str(tree)}
        # run from the unpacked tree: `python -c` puts the working directory first on sys.path
        theirs = [_timed_cli(python, base_env, ["ask", QUESTION, str(EXAMPLES)], tree) for _ in range(args.repeat)]
        result["baseline"] = args.baseline
        result["baseline_ask_seconds"] = [round(w, 2) for w, _, _ in theirs]
        result["baseline_peak_rss_mib"] = round(max(r for _, r, _ in theirs) / 1024)
        result["baseline_output"] = theirs[0][2].strip()
        result["cold_ratio"] = statistics.median(result["cold_ask_seconds"]) / statistics.median(
            result["baseline_ask_seconds"]
        )
    # 2. as a user asks about one report from the shell: the first question fills the caches, later ones differ
    warm_env = fresh()
    result["warm_first_seconds"] = round(_timed_cli(python, warm_env, ["ask", QUESTION, str(EXAMPLES)])[0], 2)
    later = [_timed_cli(python, warm_env, ["ask", q, str(EXAMPLES)]) for q in FOLLOW_UPS[: args.repeat]]
    result["later_question_seconds"] = [round(w, 2) for w, _, _ in later]
    result["later_question_peak_rss_mib"] = round(max(r for _, r, _ in later) / 1024)
    repeat = _timed_cli(python, warm_env, ["ask", QUESTION, str(EXAMPLES), "--json"])
    result["repeat_process_seconds"] = round(repeat[0], 2)
    result["repeat_process_calls"] = json.loads(repeat[2])["usage"]["calls"]
    if args.baseline:
        result["later_ratio"] = statistics.median(result["later_question_seconds"]) / statistics.median(
            result["baseline_ask_seconds"]
        )
    # 3. time to the first streamed text, from process start: nothing cached, and a later question
    result["first_text_cold_seconds"] = [round(_first_text_seconds(python, cold_env), 2) for _ in range(args.repeat)]
    result["first_text_later_seconds"] = [
        round(_first_text_seconds(python, warm_env, q, cache=True), 2) for q in FOLLOW_UPS[args.repeat : 2 * args.repeat]
    ]

    # 4. in this process: a first question, a different follow-up, the identical question again (reply cache)
    import qa
    from qa.local import get_engine

    in_process_env = fresh()
    get_engine(model, state_cache_bytes=0)  # loaded outside the timings; no KV states from disk
    settings = qa.Settings.from_env(env=in_process_env)
    with qa.Index.from_paths([EXAMPLES], settings) as index:
        started = time.perf_counter()
        index.ask(QUESTION)
        first = time.perf_counter() - started
        started = time.perf_counter()
        index.ask(FOLLOW_UPS[0])
        follow_up = time.perf_counter() - started
        started = time.perf_counter()
        again = index.ask(QUESTION)
        cached = time.perf_counter() - started
    result["in_process_first_seconds"] = round(first, 2)
    result["in_process_follow_up_seconds"] = round(follow_up, 2)
    result["follow_up_ratio"] = follow_up / first
    result["cached_repeat_seconds"] = round(cached, 3)
    result["cached_repeat_calls"] = again.usage.calls
    # 5. ask_many of N questions in one process vs N separate `qa ask` runs (--no-cache, as before this work)
    if args.many:
        questions = [QUESTION, *FOLLOW_UPS][: args.many]
        cold = settings.model_copy(update={"cache": False})
        get_engine(model).forget_prefixes()
        started = time.perf_counter()
        with qa.Index.from_paths([EXAMPLES], cold) as index:
            answers = index.ask_many(questions, concurrency=1)
        many = time.perf_counter() - started
        result["ask_many_questions"] = len(questions)
        result["ask_many_seconds"] = round(many, 1)
        result["ask_many_failed"] = sum(not isinstance(a, qa.Answer) for a in answers)
        separate = [
            _timed_cli(python, cold_env, ["ask", q, str(EXAMPLES), "--no-cache"])[0]
            for q in questions[: args.separate]
        ]
        result["separate_runs_measured"] = [round(w, 2) for w in separate]
        result["separate_runs_seconds_estimate"] = round(statistics.mean(separate) * len(questions), 1)
        result["ask_many_ratio"] = many / result["separate_runs_seconds_estimate"]
    result["load_average_after"] = os.getloadavg()
    return result


def llama_system_info() -> str:
    import llama_cpp

    info: bytes = llama_cpp.llama_print_system_info()
    return info.decode(errors="replace").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    raw = sub.add_parser("raw", help="raw llama.cpp tokens/s vs qa's in-process engine")
    raw.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    raw.add_argument("--gen-tokens", type=int, default=64)
    raw.add_argument("--repeat", type=int, default=3)
    ask = sub.add_parser("ask", help="qa ask from process start, first streamed text, follow-up, cache, ask_many")
    ask.add_argument("--repeat", type=int, default=3)
    ask.add_argument("--baseline", help="a git revision to time `qa ask` against in the same run (e.g. d5b0eee)")
    ask.add_argument("--many", type=int, default=20, help="questions for ask_many vs separate runs (0: skip)")
    ask.add_argument(
        "--separate", type=int, default=5, help="how many of those to time as separate `qa ask` runs (the mean is "
        "multiplied by --many)",
    )
    args = parser.parse_args(argv)
    if args.command == "raw":
        result = run_raw(args)
    elif args.command == "ask":
        result = run_ask(args)
    else:  # pragma: no cover
        raise SystemExit(f"unknown command {args.command}")
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
