"""The hub's one exception family. Each kind carries the exit code it means, so that
the three scripts turn any of them into a message and an exit code in one place
(hub.cli.run_command).

    HubError                      exit_code
    +-- UsageError                2  bad flag, bad file, bad key; nothing ran
    +-- UnreachableError          3  OneVizion down, refused credentials, TLS failure
    +-- NotFoundError             4  no such integration, no running run
    +-- DisabledError             5  integration disabled (RunController start)
    +-- ApiError                  -  OneVizion answered with an error status

Messages never carry a secret: code that raises them names files, keys and flags,
never their values when the value may be a password or a token.
"""

from hub import vocabulary


class HubError(Exception):
    """An expected failure: a message for the person and an exit code for the shell."""

    exit_code = vocabulary.EXIT_USAGE

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class UsageError(HubError):
    exit_code = vocabulary.EXIT_USAGE


class UnreachableError(HubError):
    exit_code = vocabulary.EXIT_UNREACHABLE


class NotFoundError(HubError):
    exit_code = vocabulary.EXIT_NOT_FOUND


class DisabledError(HubError):
    exit_code = vocabulary.EXIT_DISABLED


class ApiError(HubError):
    """OneVizion answered, with an error status. `status` is the HTTP status code;
    `transient` tells whether a retry may help (5xx, 503)."""

    exit_code = vocabulary.EXIT_UNREACHABLE

    def __init__(self, message, status, body=""):
        super().__init__(message)
        self.status = status
        self.body = body

    @property
    def transient(self):
        return self.status >= 500
