"""The one exception type for mistakes a user can fix (bad config, bad data, busy run directory).

The entry point prints its message without a traceback and exits with status 2."""


class UserError(Exception):
    """A problem in the user's input, explained in one paragraph that names the bad value and the valid ones."""


EXIT_USER_ERROR = 2
