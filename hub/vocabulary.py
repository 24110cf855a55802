"""Words the hub shares with OneVizion and with the shell: run statuses, message
types, exit codes and field limits. Imports nothing, so every module can use it.

The OneVizion spellings here are defaults; a Schema.json may rename the drop-down
values (see hub.config.Schema), so code passes these through the schema rather
than writing them into requests directly.
"""

# Run statuses (drop-down values of the Integration Run's Status field).
RUNNING = "Running"
EXECUTED_OK = "Executed without Warnings"
EXECUTED_WITH_WARNINGS = "Executed with Warnings"

# Message types (drop-down values of the Log's Message Type field).
INFO = "Info"
WARNING = "Warning"
ERROR = "Error"
MESSAGE_TYPES = (INFO, WARNING, ERROR)

# Which stream a line came from.
STDOUT = "stdout"
STDERR = "stderr"

# Field limits of the Log trackor (SPEC section 4).
MESSAGE_LIMIT = 255
DESCRIPTION_LIMIT = 65000
ELLIPSIS = "\u2026"

# Exit codes of all three scripts (SPEC section 8).
EXIT_OK = 0
EXIT_WARNINGS = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_DISABLED = 5
EXIT_REFUSED = 6
EXIT_JOURNALED = 75
EXIT_SIGNAL_BASE = 128

# Seconds between SIGTERM and SIGKILL when the child's group is stopped.
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_MAX_UPLOAD_MB = 100
# Seconds the wrapper keeps delivering after its last run before leaving the rest to the journal.
DEFAULT_DRAIN_SECONDS = 30.0
