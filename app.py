"""Launch the BA-LoRA Lab app: ``python app.py [--host H] [--port P] [--share]``.

Host and port also come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; runs are written under
BALORA_RUNS_DIR (default ``runs/``). No model is loaded at start.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys

from lab.ui import common
from lab.ui.layout import build_app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument(
        "--share", action="store_true", help="also serve through a public gradio.live link"
    )
    args = p.parse_args(argv)
    demo = build_app()
    # a training worker does not outlive the app: Ctrl-C and SIGTERM both end in shutdown()
    atexit.register(common.manager().shutdown)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, share=args.share, css_paths=[common.CSS]
    )


if __name__ == "__main__":
    main()
