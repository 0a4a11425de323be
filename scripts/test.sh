#!/usr/bin/env bash
# Install the project with its test extras, install or build the real servers the
# integration tests start (cached outside the repository), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"
bash scripts/realstack/setup_all.sh
# Under CI=true a missing server fails its tests instead of skipping them.
export CI="${CI:-true}"
exec python3 -m pytest -q -p no:cacheprovider "$@"
