"""RunPod workers that podgate ships: tenants of the platform, not part of it.

``smollm2`` is the built-in chat worker (SmolLM2-135M-Instruct on llama.cpp, speaking
worker-vllm's OpenAI dialect); ``podgate serve`` with no config runs it. It is written the
way a user writes their own RunPod worker: a module with a ``handler`` (and a
``RUNPOD_CONFIG``), run by ``podgate worker --handler workers.smollm2:handler`` or by
``runpod.serverless.start``. Its other modules: ``defaults`` (the model id, the GGUF, the
thread count: their one home), ``llama_engine`` (the model) and ``openai_serving`` (OpenAI
requests in, worker-vllm output out; the OpenAI Structs come from ``adapters``).

Nothing is imported here.
"""
