"""The one base of every error the cookbook raises on purpose, so a caller (the CLI, a notebook)
can catch them all at once. Each says how the CLI reports it: its exit status (2 for bad input,
1 for something that failed) and whether the message names the subcommand."""

from __future__ import annotations


class CookbookError(Exception):
    """Something failed; the message says what and what to do."""

    exit_code = 1
    label = "error"
    names_command = True  # "cookbook serve: error: ..." rather than "cookbook: error: ..."

    def cli_message(self, command: str | None) -> str:
        where = f"cookbook {command}" if self.names_command and command else "cookbook"
        return f"{where}: {self.label}: {self}"


class BadInputError(CookbookError):
    """A value given by the user (or a data file) is not acceptable; the message names what is."""

    exit_code = 2


class ServerError(CookbookError, RuntimeError):
    """A server failed; the message says what happened and ends with the tail of its log."""


class ServerStartError(ServerError):
    """The server did not become ready."""
