"""Launch the BA-LoRA Lab app: ``python app.py [--host H] [--port P] [--share] [--public|--local]``.

Host and port also come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; runs are written under
BALORA_RUNS_DIR (default ``runs/``; ``/data/runs`` on a Space's persistent storage). No model is
loaded at start. The hosting mode (see SECURITY.md) is ``local`` on a loopback address and
``public`` on a Space, a share link or any other address; ``--public`` / ``--local`` override it.
On a ZeroGPU Space (or with ``BALORA_ZEROGPU=sim``) training runs in chunks (``lab.jobs.chunks``).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import sys

# First: on a ZeroGPU Space ``spaces`` must be imported before anything initialises CUDA; off
# ZeroGPU importing it changes nothing (its decorator returns the function unchanged).
import spaces  # noqa: F401

from lab.jobs import hosting


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument(
        "--share", action="store_true", help="also serve through a public gradio.live link"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--public", dest="mode", action="store_const", const="public")
    mode.add_argument("--local", dest="mode", action="store_const", const="local")
    args = p.parse_args(argv)
    # the whole process (handlers, job manager) reads the mode from here
    os.environ["BALORA_MODE"] = hosting.detect_mode(args.host, args.mode, args.share)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from lab.ui import common
    from lab.ui.layout import build_app

    manager = common.manager()  # marks runs a dead app left "running" as failed, now
    for run_id in manager.reconciled:
        logging.getLogger("lab").warning("run %s: %s", run_id, "marked failed (app restarted)")
    demo = build_app()
    # a training worker does not outlive the app: Ctrl-C and SIGTERM both end in shutdown(),
    # and a worker whose app is killed outright ends itself (lab.jobs.worker)
    atexit.register(manager.shutdown)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    limits = common.hosting().limits
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        css_paths=[common.CSS],
        theme=common.theme(),
        max_file_size=limits.upload_bytes,
        # Every handler is guarded (its errors are already clear gr.Errors without paths), so
        # what else reaches the page is Gradio's own input check naming the bad component.
        show_error=True,
    )


if __name__ == "__main__":
    main()
