"""The exception types for mistakes a user can fix (bad config, bad data, a refused or damaged file, a busy run
directory, a diverged run).

The entry point prints the message without a traceback and exits with status 2."""

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem in the user's input, explained in one paragraph that names the bad value and the valid ones."""


class RefusedFile(UserError):
    """A file from elsewhere whose pickle would run code when loaded (deepres/safe_files.py); nothing of it ran."""


class DamagedFile(UserError):
    """A file of a run that cannot be read whole: cut short by a copy or a full disk, or overwritten."""

    def __init__(self, path, why: str):
        super().__init__(f"{path} is damaged ({why})")
        self.path = path


class Diverged(UserError):
    """The training loss, or the weights, became NaN or infinite."""

    @classmethod
    def loss(cls, step: int, last_finite: float) -> "Diverged":
        return cls(f"training diverged: the loss became NaN or infinite at iteration {step} (last finite loss "
                   f"{last_finite:.4g}); lower optimizer.lr or check the data.")

    @classmethod
    def weights(cls, step: int, last_finite: float) -> "Diverged":
        return cls(f"training diverged: weights became NaN or infinite by iteration {step} (last finite loss "
                   f"{last_finite:.4g}); lower optimizer.lr or check the data.")

    @classmethod
    def every_member(cls) -> "Diverged":
        return cls("every run of the pack diverged; each one's status.json says when.")
