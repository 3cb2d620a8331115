"""Errors a user can fix, each naming the field it is about."""


class OptionError(ValueError):
    """A request option is invalid.

    ``field`` names the form field / JSON key (``cpu``, ``mounts[1].host_path``);
    ``str(error)`` is the full message shown to the user, field first.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class InUseError(OptionError):
    """The object is used by workloads that have not ended, which ``workloads`` names; the
    request is fine, the object's state is not (HTTP 409, where other refusals are 400)."""

    def __init__(self, field: str, message: str, workloads: list[str]):
        self.workloads = list(workloads)
        super().__init__(field, message)


class QuotaError(OptionError):
    """The request is valid but exceeds what the user may hold at once."""


class CapacityError(OptionError):
    """The request is valid but no host in the region has room for it now."""
