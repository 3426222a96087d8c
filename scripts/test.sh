#!/usr/bin/env bash
# The full test suite: sets up .venv (see setup_env.sh), then runs pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k pairwise -x`.
# Tests run in MMREWARD_TEST_WORKERS processes (default 2, one per core of the reference machine; 0: one
# process), a test file at a time each: most tests are single-threaded (tests/conftest.py), so two
# workers take about 60 % of the time one does.
set -euo pipefail
cd "$(dirname "$0")/.."
MMREWARD_EXTRAS=${MMREWARD_EXTRAS:-dev,robotics,text,vision,published,serve,serve-ray} bash scripts/setup_env.sh
# the official code of the published vision models, in a side folder (parity tests compare against it)
bash scripts/setup_published_refs.sh
VENV=${MMREWARD_VENV:-.venv}
"$VENV/bin/python" -m mmreward.env_report
set +e
"$VENV/bin/python" -m pytest -q -ra -n "${MMREWARD_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
