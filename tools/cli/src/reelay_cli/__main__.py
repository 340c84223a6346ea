"""`reelay` / `python -m reelay_cli`: the command line's entry point."""

from __future__ import annotations

from reelay_cli.app import app


def main() -> None:
    """Run the command line (its exit code is the command's: README, "Command line")."""
    app(prog_name="reelay")


if __name__ == "__main__":
    main()
