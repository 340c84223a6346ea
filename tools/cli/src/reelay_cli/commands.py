"""What every `reelay` command shares: what it talks to (Wiring), the common flags, and how a
command turns configuration into an API client and failures into exit codes."""

from __future__ import annotations

import os
import sys
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn

import httpx
import typer

from reelay_cli.client import CliError, ReelayApi
from reelay_cli.exits import ExitCode
from reelay_cli.follow import Clock
from reelay_cli.output import Output

DEFAULT_TIMEOUT_SECONDS = 600.0


def open_in_browser(url: str) -> bool:
    """Open `url` in a graphical browser, if this session has one. Without a display on Linux,
    webbrowser would fall back to a console browser (lynx, w3m) that takes over the terminal and
    cannot do TikTok's login; the URL is printed either way. $BROWSER, when set, is respected."""
    graphical = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("BROWSER")
    if sys.platform.startswith("linux") and not graphical:
        return False
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


@dataclass
class Wiring:
    """What a command talks to. The real ones by default; unit tests pass their own as the Typer
    context's `obj` (an httpx.MockTransport, a fake clock, a browser that records the URL)."""

    transport: httpx.BaseTransport | None = None
    clock: Clock = field(default_factory=Clock)
    open_browser: Callable[[str], bool] = open_in_browser
    force_terminal: bool | None = None


UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="REELAY_URL", show_envvar=True, help="ingest's base URL, http(s)://host:port."
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="REELAY_API_KEY", show_envvar=True, help="An API key ingest accepts."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON only, on stdout.")]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=0.0, help="Seconds to wait before giving up (exit 3).")
]
# Hidden: how often to poll while following; 1 s is what a person watching wants.
IntervalOpt = Annotated[float, typer.Option("--poll-interval", min=0.0, hidden=True)]


def wiring_of(ctx: typer.Context) -> Wiring:
    """The Wiring a test passed as the context's `obj`, else the real one."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Wiring) else Wiring()


def api_of(url: str | None, api_key: str | None, wiring: Wiring) -> ReelayApi:
    """The API client, or a usage error (exit 2) naming the configuration that is missing."""
    if not url:
        raise typer.BadParameter(
            "no ingest URL: pass --url or set REELAY_URL (e.g. http://127.0.0.1:8000)",
            param_hint="'--url' / REELAY_URL",
        )
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{url!r} is not an http(s) URL", param_hint="'--url' / REELAY_URL")
    if not api_key:
        raise typer.BadParameter(
            "no API key: pass --api-key or set REELAY_API_KEY", param_hint="'--api-key' / REELAY_API_KEY"
        )
    return ReelayApi(url, api_key, transport=wiring.transport)


@contextmanager
def reported(out: Output) -> Iterator[None]:
    """Turn a CliError into its one-line report and exit 1 (never a traceback)."""
    try:
        yield
    except CliError as exc:
        out.error(exc)
        raise typer.Exit(ExitCode.FAILED) from None


def answer(
    ctx: typer.Context,
    url: str | None,
    api_key: str | None,
    json_mode: bool,
    call: Callable[[ReelayApi], Any],
    show: Callable[[Output, Any], None],
) -> None:
    """A command that is one API call: make it, then print its answer as JSON (--json) or as `show`
    says; an API error is reported and exits 1."""
    wiring = wiring_of(ctx)
    out = Output(json_mode=json_mode, force_terminal=wiring.force_terminal)
    with reported(out), api_of(url, api_key, wiring) as api:
        view = call(api)
        if json_mode:
            out.json(view)
        else:
            show(out, view)


def exit_with(code: ExitCode) -> NoReturn:
    """End the command with `code`."""
    raise typer.Exit(int(code))
