#!/usr/bin/env bash
# The project's checks: lint, format, types, then the whole test suite (slow end-to-end tests too).
# Pass `-m "not slow"` (or any pytest arguments) to narrow the pytest run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=.venv/bin
"$bin/ruff" check src tests benchmarks
"$bin/ruff" format --check src tests benchmarks
"$bin/mypy" --no-error-summary
exec "$bin/python" -m pytest "$@"
