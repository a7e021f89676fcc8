#!/usr/bin/env bash
# The README's test command (and what .ci/run runs): set up, build, then lint + types + tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k scheduler, or -m slow for the slow set).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" --test-tools
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (strict, qvla_core)"
mypy
echo "== pytest"
markers="not slow and not gpu"
if [[ " $* " == *" -m "* ]]; then markers=""; fi
exec python -m pytest ${markers:+-m "$markers"} "$@"
