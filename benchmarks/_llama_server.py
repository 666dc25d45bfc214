"""`python -m llama_cpp.server ARGS`, with llama.cpp's extra weight buffers off where AMX is compiled in.

A llama.cpp build made with -march=native on a Sapphire Rapids host includes the AMX backend; in a VM
that advertises AMX without supporting it, the first AMX instruction dies with SIGILL (the server
crashes on its first completion). qa's embedded engine avoids this by loading with
`use_extra_bufts=False` (qa/local/engine.py); llama_cpp.server has no flag for it, so this wrapper sets the
same default before handing over to the server's own `__main__`. QA_LOCAL_AMX=1 keeps AMX on.
The setting only changes how weights are laid out in memory, not what the model computes.
"""

from __future__ import annotations

import os
import runpy
import sys

import llama_cpp
import llama_cpp.llama_cpp as low


def main() -> None:
    amx_built = b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()
    keep = os.environ.get("QA_LOCAL_AMX", "").strip().lower() in ("1", "true", "yes", "on")
    if amx_built and not keep:
        original = low.llama_model_default_params

        def patched():  # type: ignore[no-untyped-def]
            params = original()
            params.use_extra_bufts = False
            return params

        low.llama_model_default_params = patched
        print("benchmarks/_llama_server.py: AMX build, loading with use_extra_bufts=False", file=sys.stderr)
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
