#!/usr/bin/env bash
# Start the web server and a Celery worker on the embedded defaults; Ctrl+C (or either one dying) stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8000}
BIN=.venv/bin
mkdir -p var

$BIN/celery -A webapp worker --loglevel=INFO --concurrency=1 --pool=solo >var/celery.log 2>&1 &
worker=$!
$BIN/gunicorn webapp.wsgi:application --bind "127.0.0.1:$PORT" --workers 2 --access-logfile - --error-logfile - &
web=$!
trap 'kill $worker $web 2>/dev/null || true; wait 2>/dev/null || true' EXIT INT TERM

echo
echo "HybridPref is running at http://127.0.0.1:$PORT/  (logins above; Celery worker log: var/celery.log)"
echo "Press Ctrl+C to stop."
wait -n "$worker" "$web"
