#!/bin/sh
# Example integration: an export that logs progress, hits an error and exits non-zero.
echo "Connecting to ${EXPORT_TARGET:-the target}"
sleep 0.5
echo "Exported 120 records"
sleep 0.5
echo "error: upload of batch 2 refused by ${EXPORT_TARGET:-the target}" >&2
echo "Export incomplete" >&2
exit 3
