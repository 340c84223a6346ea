"""The `reelay` command line (Typer): the root command, its help, and where each command lives.

Decisions live beside the calls they concern: which states end an upload how (exits.py), how a
follow polls (follow.py), what is printed (output.py), the commands themselves (uploads.py,
accounts.py) over what they share (commands.py).
"""

from __future__ import annotations

import typer

from reelay_cli import uploads
from reelay_cli.accounts import accounts_app
from reelay_cli.exits import EXIT_CODES

HELP = f"""Upload videos to TikTok through Reelay's ingest API, follow them, and manage accounts.

Configuration: REELAY_URL and REELAY_API_KEY, or --url and --api-key (a flag wins over its
variable). With --json a command prints JSON only, on stdout: one document, or JSON lines (one
object with a "type" per line) with --wait, --watch and accounts connect.

{EXIT_CODES}"""

app = typer.Typer(
    name="reelay",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(uploads.upload)
app.command()(uploads.status)
app.command("uploads")(uploads.list_uploads)
app.command()(uploads.cancel)
app.add_typer(accounts_app, name="accounts")
