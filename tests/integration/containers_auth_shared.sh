#!/usr/bin/env bash
# containers_auth.sh with --daemon-mode shared: registry credentials and their
# renewal for an image mounted in the shared nydusd (PUT /api/v1/config?id=/<snapshot id>).
AUTH_DAEMON_MODE=shared exec bash "$(dirname "$0")/containers_auth.sh" "$@"
