"""The ``podgate`` command: one entry point, one subcommand per process kind.

- ``podgate serve``     the OpenAI-compatible proxy (with no ``--config``: the embedded
                        default, a local endpoint + SmolLM2 worker + proxy in one tree)
- ``podgate endpoint``  the self-hosted RunPod Serverless endpoint server
- ``podgate worker``    a RunPod handler run through the ``runpod`` SDK's own worker loop
- ``podgate hash-key``  a client key on stdin → the SHA-256 that ``[[keys]]`` holds

Each subcommand's module owns its arguments (``add_arguments``) and its ``run``; this
file only wires them together, importing each lazily so that ``podgate worker`` does
not pay for Litestar and ``podgate serve`` does not import the serverless package
unless it starts the embedded default.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help)
_COMMANDS = {
    "serve": ("proxy.serve", "run the OpenAI-compatible proxy (no --config: the embedded default)"),
    "endpoint": ("serverless.cli_endpoint", "run the self-hosted RunPod Serverless endpoint server"),
    "worker": ("serverless.cli_worker", "run a RunPod handler through the runpod SDK worker loop"),
    "hash-key": ("proxy.keys", "print the SHA-256 of a client key read on stdin, for [[keys]] sha256"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="podgate", description="OpenAI-compatible gateway for RunPod Serverless")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    name = argv[0] if argv and argv[0] in _COMMANDS else None
    for command, (module_name, help_text) in _COMMANDS.items():
        sp = sub.add_parser(command, help=help_text)
        if command == name:  # only the chosen command's module is imported
            importlib.import_module(module_name).add_arguments(sp)
    args = parser.parse_args(argv)
    module = importlib.import_module(_COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
