"""Errors that the command line turns into a one-line message and exit code 2."""


class UserInputError(ValueError):
    """Bad input from the user: the message names the bad value and what is valid."""
