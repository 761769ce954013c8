"""``actlab serve DIR...``: flags (the request limits from ``actlab.web.live.Limits`` via actlab.clikit) and a call
into actlab.web.app.serve; no logic, no torch."""
from __future__ import annotations

import argparse

from actlab import clikit


def cmd_serve(a: argparse.Namespace) -> None:
    from actlab.web.app import serve

    serve(a.dirs, host=a.host, port=a.port, model_name=a.model, limits=clikit.config_from_args(a))


def register(sub) -> None:
    from actlab.web.live import Limits

    p = sub.add_parser("serve", help="the explorer: a local web app over artifact folders (needs the web extra)",
                       description="Serve model, SAE, feature, prompt, attention, steering and patching pages for "
                                   "the artifact folders given (latent caches, dictionaries, stats reports, patch "
                                   "results, directions). Binds 127.0.0.1 unless --host says otherwise.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="artifact folders (or folders holding them) to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others warn)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--model", default=None, help="model for the live pages (default: the one the artifacts name)")
    clikit.add_config(p, Limits)
    p.set_defaults(func=cmd_serve)
