"""The live console (``/console``): endpoints, live requests, errors, cancels, latency and a
playground on one page, updated through one SSE stream per open page.

``feed`` builds the snapshots (from the hooks that feed ``/metrics``), ``windows`` holds the
rolling windows behind them, ``routes`` serves the page, the feed and the cancel button and
decides who may see them; ``static/`` is the page (hand-written HTML, JS and CSS, no build
step, nothing fetched from outside).
"""
