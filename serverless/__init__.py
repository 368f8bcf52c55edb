"""The self-hosted RunPod Serverless endpoint: a faithful implementation of RunPod's queue API
for callers (``/v2/{endpoint}/run``, ``/status``, ``/stream`` …) and for unmodified
``runpod`` SDK workers (``job-take``, ``job-done``, ``job-stream``, ``job-stop``, ``ping``).

Modules: ``jobs`` (job model and wire shapes), ``store`` (the JobStore interface, memory and
Redis stores), ``service`` (operations, long-polls, sweeper), ``routes`` + ``app`` (HTTP),
``openai_gateway`` (RunPod's ``/openai/v1`` gateway), ``limits``, ``metrics`` (``GET
/metrics``), ``webhooks``, ``chunks``, ``settings``; ``cli_endpoint`` / ``cli_worker`` back
``podgate endpoint`` and ``podgate worker`` (the workers podgate ships live in ``workers/``).

In-process use::

    from serverless.app import create_app, serve
    from serverless.settings import EndpointSettings
    app = create_app(EndpointSettings(endpoints=["local"]))  # a Litestar app
    await serve(EndpointSettings(port=0), on_ready=print)    # or run it under uvicorn

Nothing is imported here, so ``podgate worker`` does not pay for Litestar.
"""
