"""Tokens per second through ``podgate serve`` (the embedded default) versus llama.cpp called
directly in this process, on the same model, prompt and settings; and the time from
``podgate serve`` to its first answer.

    .venv/bin/python bench/bench_smollm2.py [--runs 5] [--max-tokens 256] [--threads N]

- podgate: ``podgate serve --port 0`` as a subprocess; each run is one streamed chat
  completion through the ``openai`` SDK (the whole path: proxy → /run + /stream → local
  endpoint → runpod SDK worker → llama.cpp); tokens from the reported usage, time from the
  request to ``[DONE]``.
- direct: ``Llama.create_chat_completion`` in this process, with the same GGUF, context size,
  thread count (the worker's default unless ``--threads``) and the same loading settings
  (``workers.llama_engine.load_llama``), and like the worker from an empty KV cache each time
  (without the reset llama-cpp-python would reuse the previous run's prompt, which the worker
  never does: its seeds must not depend on the request before).
Runs alternate between the two (so background load hits both alike), temperature 0 and a
fixed seed, after one warm-up each; the figures are medians, and the ratio is the median of
the per-pair ratios. Both must produce the same text (greedy decoding): the script says so if
they differ. On a busy machine wall-clock figures wander; the CPU time each process of the
tree spends per token (from /proc) does not, and shows where podgate's overhead goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openai import OpenAI

from workers.defaults import MODEL_ID, N_CTX, default_model_path, default_threads
from workers.llama_engine import load_llama
from tests.e2e.serve_process import ServeProcess

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]
SEED = 42


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_pids(sp: ServeProcess) -> dict[str, int]:
    pids = {"proxy (podgate serve)": sp.proc.pid}
    for pid in sp.descendants(depth=1):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        pids["worker (SDK + handler + llama.cpp)" if b"--worker-id" in argv else "endpoint"] = pid
    return pids


def through_podgate(client: OpenAI, max_tokens: int) -> tuple[float, float, int, str]:
    """(seconds to [DONE], seconds to first token, completion tokens, text)."""
    t0 = time.perf_counter()
    first = None
    parts, usage = [], None
    for chunk in client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=max_tokens,
                                                temperature=0, seed=SEED, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    end = time.perf_counter()
    return end - t0, (first or end) - t0, usage.completion_tokens, "".join(parts)


def direct(llm, max_tokens: int) -> tuple[float, int, str]:
    llm.reset()  # from an empty KV cache, as the worker evaluates every prompt (reproducible seeds)
    t0 = time.perf_counter()
    r = llm.create_chat_completion(messages=MESSAGES, max_tokens=max_tokens, temperature=0, seed=SEED)
    return time.perf_counter() - t0, r["usage"]["completion_tokens"], r["choices"][0]["message"]["content"]


def first_answer(sp: ServeProcess, timeout: float = 180) -> float:
    """Seconds from starting ``podgate serve`` to its first chat answer (retrying until the
    banner shows the address and a request succeeds)."""
    deadline = time.monotonic() + timeout
    while sp.base_url is None:
        if sp.proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"podgate serve did not start:\n{sp.output()}")
        time.sleep(0.01)
    client = OpenAI(base_url=sp.base_url, api_key="x", max_retries=0, timeout=60)
    while True:
        try:
            client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
            return time.monotonic() - sp.started_at
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the worker's default)")
    args = ap.parse_args()
    threads = args.threads or default_threads(1)

    os.environ["PODGATE_LLAMA_THREADS"] = str(threads)  # the tree's worker inherits it
    sp = ServeProcess().start()
    try:
        t_answer = first_answer(sp)
        sp.wait_ready()
        t_ready = sp.banner_after
        client = OpenAI(base_url=sp.base_url, api_key="x", max_retries=0, timeout=300)
        llm = load_llama(default_model_path(), n_ctx=N_CTX, n_threads=threads)

        through_podgate(client, args.max_tokens)  # warm-up
        direct(llm, args.max_tokens)
        pids = tree_pids(sp)
        pg, pg_ttft, dr, ratios, same = [], [], [], [], True
        cpu = {name: 0.0 for name in pids}
        cpu_direct, tokens_pg, tokens_d = 0.0, 0, 0
        for _ in range(args.runs):
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            secs, ttft, n, text_pg = through_podgate(client, args.max_tokens)
            for name, pid in pids.items():
                cpu[name] += cpu_seconds(pid) - before[name]
            tokens_pg += n
            pg.append(n / secs)
            pg_ttft.append(ttft)
            c0 = time.process_time()
            secs, n_d, text_d = direct(llm, args.max_tokens)
            cpu_direct += time.process_time() - c0
            tokens_d += n_d
            dr.append(n_d / secs)
            ratios.append(pg[-1] / dr[-1])
            same = same and text_pg == text_d and n == n_d
    finally:
        sp.stop()

    pg_med, dr_med = statistics.median(pg), statistics.median(dr)
    print(f"SmolLM2-135M-Instruct Q4_1, llama.cpp threads={threads}, max_tokens={args.max_tokens}, "
          f"temperature 0, seed {SEED}, {args.runs} runs each (median; min-max)")
    print(f"  direct llama.cpp     {dr_med:7.1f} tok/s   ({min(dr):.1f}-{max(dr):.1f})")
    print(f"  through podgate      {pg_med:7.1f} tok/s   ({min(pg):.1f}-{max(pg):.1f})   "
          f"first token {statistics.median(pg_ttft) * 1000:.0f} ms")
    print(f"  ratio podgate/direct {statistics.median(ratios):7.3f}   (median of pairs; target >= 0.9)")
    print(f"  same text and token count both ways: {'yes' if same else 'NO'}")
    print(f"  podgate serve → first answer {t_answer:.2f} s   (→ ready banner {t_ready:.2f} s)")
    print("  CPU per generated token:")
    print(f"    direct llama.cpp (this process)       {cpu_direct / tokens_d * 1000:6.2f} ms")
    for name, secs in cpu.items():
        print(f"    {name:38s} {secs / tokens_pg * 1000:6.2f} ms")
    print(f"    (load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
