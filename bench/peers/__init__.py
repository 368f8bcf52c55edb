"""podgate's passthrough measured against direct and LiteLLM (issue 9, part 4).

    PYTHONPATH=. .venv/bin/python -m bench.peers [--rounds 3] [--quick] [--drift 100000]

One run drives the same fast OpenAI-compatible upstream (``upstream``) three ways: directly,
through ``podgate serve --config`` with one ``format = "openai"`` model (the passthrough),
and through LiteLLM's proxy (installed into its own venv by ``litellm_env``). Each gateway is
alone on core 0; the upstream and the load generator (``load``) share core 1. The processes
and their ``/proc`` figures are in ``servers``, the rounds in ``rounds``, the markdown table
in ``report``; ``__main__`` is the command line.
"""
