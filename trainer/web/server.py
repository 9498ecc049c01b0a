"""Serving the UI safely: 127.0.0.1 by default; any other address, or a Gradio share link, only with a
login (``--auth USER:PASS`` or ``--auth-file FILE``), since whoever reaches the page can train, read
files and run models on this machine."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from duotune.trainer.common.errors import UserError

__all__ = ["check_exposure", "is_loopback", "read_auth", "serve"]


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def read_auth(auth: str | None, auth_file: str | None) -> list[tuple[str, str]] | None:
    """The (user, password) pairs of ``--auth`` or ``--auth-file`` (one USER:PASS per line, # comments)."""
    if auth and auth_file:
        raise UserError("give --auth or --auth-file, not both")
    if auth is not None:
        return [_pair(auth, "--auth")]
    if auth_file is None:
        return None
    path = Path(auth_file).expanduser()
    if not path.is_file():
        raise UserError(
            f"--auth-file {path} does not exist (or is not a file); write USER:PASS lines into it"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(
            f"--auth-file {path}: cannot read it ({type(e).__name__}); save it as UTF-8 text"
        ) from None
    pairs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            pairs.append(_pair(line.strip(), f"--auth-file {path} line {lineno}"))
    if not pairs:
        raise UserError(f"--auth-file {path} holds no USER:PASS line")
    return pairs


def _pair(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        raise UserError(f"{where}: expected USER:PASS with a non-empty user and password")  # never echo it
    return user.strip(), password


def check_exposure(host: str, share: bool, auth: list | None) -> None:
    """Refuse to serve beyond this machine without a login."""
    if auth:
        return
    if share:
        raise UserError(
            "--share publishes the UI on a public gradio.live link: set --auth USER:PASS or --auth-file FILE "
            "(whoever opens the page can train and run models on this machine)"
        )
    if not is_loopback(host):
        raise UserError(
            f"--host {host} makes the UI reachable from other machines: set --auth USER:PASS or --auth-file "
            "FILE, or keep the default --host 127.0.0.1 (whoever opens the page can train and run models here)"
        )


def serve(host: str = "127.0.0.1", port: int = 7860, auth: str | None = None, auth_file: str | None = None,
          share: bool = False, lang: str = "en", block: bool = True):  # fmt: skip
    """Check the exposure, build the app and serve it (blocking unless ``block`` is False)."""
    logins = read_auth(auth, auth_file)
    check_exposure(host, share, logins)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the server
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError('the web UI needs gradio: pip install "duotune[web]"') from None
    from .app import CSS, build_app, theme

    app = build_app(lang)
    app.queue(default_concurrency_limit=4)
    print(f"[duotune] web UI on http://{host}:{port}" + (" (login required)" if logins else ""), flush=True)
    try:
        return app.launch(
            server_name=host,
            server_port=port,
            auth=logins,
            share=share,
            inbrowser=False,
            show_error=True,
            ssr_mode=False,
            quiet=True,
            prevent_thread_lock=not block,
            theme=theme(),
            css=CSS,
        )
    except OSError as e:
        raise UserError(f"cannot serve on {host}:{port} ({e}); choose another --port") from None
