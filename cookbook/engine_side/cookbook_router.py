"""sglang-router's `launch_router`, with its API key taken from the environment.

The router reads its key only from `--api-key`, where every user of the machine could read it in
the process list. The cookbook starts the router as `python -m cookbook_router ARGS...` with the
key in COOKBOOK_ROUTER_API_KEY: the router's own parser reads ARGS, the key is set on the parsed
arguments, and the router's own launcher starts it. Nothing else differs.
"""

from __future__ import annotations

import os
import sys

KEY_ENV = "COOKBOOK_ROUTER_API_KEY"


def main(argv: list[str]) -> None:
    from sglang_router.launch_router import launch_router, parse_router_args

    args = parse_router_args(argv)
    if "--api-key" in argv:
        sys.exit("cookbook_router: pass the key in $COOKBOOK_ROUTER_API_KEY, not --api-key")
    args.api_key = os.environ.pop(KEY_ENV, None) or sys.exit(f"cookbook_router: {KEY_ENV} is unset")
    launch_router(args)


if __name__ == "__main__":
    main(sys.argv[1:])
