"""tickarchive: the one entry point.

    python launch.py [mode=archive|backup|restore|status|reindex|migrate|export|stop] [Hydra overrides ...]

Examples:
    python launch.py                                      # archive the live venues
    python launch.py source=sim duration_s=60 storage.rollover=10s
    python launch.py source=replay replay.file=rec.gz replay.speed=0 storage.root=/tmp/a
    python launch.py --cfg                                # print the composed config and exit

The config is composed from ``conf/`` with Hydra's override grammar and validated before
anything starts; a bad override prints one ``error:`` line and exits with status 2.
"""
from __future__ import annotations

import os
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    """Run launch.py with ``argv`` (overrides); returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from actors.cli.config import load_settings, compose
    from actors.errors import TickarchiveError

    show_cfg = "--cfg" in argv
    overrides = [a for a in argv if a != "--cfg"]
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        if show_cfg:
            from omegaconf import OmegaConf
            print(OmegaConf.to_yaml(compose(overrides)))
            return 0
        settings = load_settings(overrides)
        return run(settings)
    except TickarchiveError as exc:          # every user-facing error: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(settings) -> int:
    """Dispatch a validated run to its mode."""
    from actors.remote.archive import install_sigint, run_archive
    from actors.logs import setup_logging

    setup_logging(settings.log_level, console="json" if settings.console == "json" else "plain")
    if settings.mode == "stop" or (settings.mode == "archive" and settings.ray.detach):
        from actors.remote.runner import start_detached, stop_detached
        if settings.mode == "archive":
            print(start_detached(settings))
            return 0
        ok, summary = stop_detached(settings)
        print(summary)
        return 0 if ok else 1
    if settings.mode == "archive":
        stop = threading.Event()
        install_sigint(stop)
        report = run_archive(settings, stop_flag=stop)
        print(report.summary())
        return 0 if report.ok else 1       # a failed final backup is a failed run
    from actors.cli import modes  # backup / restore / status / reindex / migrate / export
    return modes.run(settings)


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        sys.exit(main())
    except BrokenPipeError:              # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
