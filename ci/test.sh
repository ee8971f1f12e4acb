#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every check in ci/ci.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
bash ci/ci.sh all
