#!/bin/bash
# Docker HEALTHCHECK of the ticketmax image, for both roles (no curl needed: bash /dev/tcp).
#
# Healthy when either
#   - the control plane's GET /healthz answers 200 (its database answers and it is not draining),
#     on the port of TICKETMAX_HTTP_ADDR (default 8080), or
#   - the executor's gRPC port accepts a TCP connection, on the port of TICKETMAX_EXECUTOR_ADDR
#     (default 50061).
# A control plane whose /healthz answers 503 is unhealthy: no executor listens in its container.
# With TICKETMAX_TLS_CERT set the HTTP port speaks TLS, which bash cannot: the control plane is
# then healthy when that port accepts a connection.
set -u

port_of() { # "0.0.0.0:8080" or "[::]:8080" -> 8080
    local addr=$1
    echo "${addr##*:}"
}

http_port=$(port_of "${TICKETMAX_HTTP_ADDR:-127.0.0.1:8080}")
executor_port=$(port_of "${TICKETMAX_EXECUTOR_ADDR:-127.0.0.1:50061}")

control_plane_healthy() {
    exec 3<>"/dev/tcp/127.0.0.1/${http_port}" || return 1
    if [[ -n ${TICKETMAX_TLS_CERT:-} ]]; then
        exec 3>&-
        return 0
    fi
    printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    local status_line
    IFS= read -r -t 3 status_line <&3 || return 1
    exec 3>&-
    [[ $status_line == HTTP/1.[01]\ 200* ]]
}

executor_listening() {
    exec 4<>"/dev/tcp/127.0.0.1/${executor_port}" || return 1
    exec 4>&-
}

if control_plane_healthy 2>/dev/null || executor_listening 2>/dev/null; then
    exit 0
fi
echo "unhealthy: neither GET /healthz on :${http_port} answered 200 nor :${executor_port} accepts connections" >&2
exit 1
