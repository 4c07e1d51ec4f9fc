#!/usr/bin/env bash
# Start the web server and a Celery worker on the embedded defaults; Ctrl+C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8000}
BIN=.venv/bin

$BIN/celery -A webapp worker --loglevel=INFO --concurrency=1 --pool=solo >var/celery.log 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT INT TERM

echo
echo "HybridPref is running at http://127.0.0.1:$PORT/  (logins above; Celery worker log: var/celery.log)"
echo "Press Ctrl+C to stop."
$BIN/gunicorn webapp.wsgi:application --bind "127.0.0.1:$PORT" --workers 2 --access-logfile - --error-logfile -
