# One image, both roles: ticketmax-control-plane, ticketmax-executor and ticketmaxctl.
#
#   docker build -t ticketmax .
#   docker run --rm ticketmax                                   # control plane, embedded SQLite
#   docker run --rm ticketmax ticketmax-executor                # executor
#   docker run --rm -it ticketmax ticketmaxctl --url http://cp:50051 status
#   docker compose up                                           # the whole system (see docker-compose.yml)
#
# Builder and runtime are both Debian bookworm, so the binaries link against the same glibc.
# sea-orm 2 needs Rust 1.94 or newer.
ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies only. The workspace manifests, the lock file and stub targets: this layer (all
#    of the registry crates, compiled) is reused until Cargo.lock or a Cargo.toml changes. A new
#    workspace member needs its Cargo.toml copied here too. Stubs: a lib.rs per member, a
#    `fn main() {}` for every explicit target path (`path = "..."`, e.g. ticketmaxctl's) and for
#    the two servers' main.rs, and an empty build script for proto.
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/
COPY control-plane/Cargo.toml control-plane/
COPY executor/Cargo.toml executor/
COPY clients/Cargo.toml clients/
COPY tests/Cargo.toml tests/
RUN set -eu; \
    for member in proto control-plane executor clients tests; do \
        mkdir -p "$member/src"; \
        echo '// dependency-caching stub' > "$member/src/lib.rs"; \
        for target in $(sed -n 's/^path *= *"\(.*\)"/\1/p' "$member/Cargo.toml"); do \
            mkdir -p "$member/$(dirname "$target")"; \
            echo 'fn main() {}' > "$member/$target"; \
        done; \
    done; \
    rm control-plane/src/lib.rs; \
    echo 'fn main() {}' > control-plane/src/main.rs; \
    echo 'fn main() {}' > executor/src/main.rs; \
    echo 'fn main() {}' > proto/build.rs; \
    cargo fetch --locked; \
    cargo build --locked --release \
        -p ticketmax-control-plane -p ticketmax-executor -p ticketmax-client --bins

# 2. The sources. COPY keeps the files' own mtimes, which may be older than the stubs' build:
#    touch them so cargo rebuilds every workspace crate instead of shipping a stub (a stub
#    prints nothing: the `--help | grep Usage` check fails the build if one slipped through).
COPY . .
RUN set -eu; \
    find proto control-plane executor clients tests -type f -exec touch {} +; \
    cargo build --locked --release \
        -p ticketmax-control-plane -p ticketmax-executor -p ticketmax-client --bins; \
    mkdir -p /out; \
    for bin in ticketmax-control-plane ticketmax-executor ticketmaxctl; do \
        install -m 0755 "target/release/$bin" /out/; \
        "/out/$bin" --help | grep -q Usage; \
    done

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ticketmax \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ticketmax \
        --shell /usr/sbin/nologin ticketmax \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/ticketmax

COPY --from=builder /out/ /usr/local/bin/
COPY deploy/healthcheck.sh /usr/local/bin/ticketmax-healthcheck

# Listen on all interfaces inside the container (the binaries default to loopback). The data dir
# holds the embedded default's SQLite files, the .eml mail directory, uploads and logs.
# An executor must also be given TICKETMAX_EXECUTOR_ADVERTISE_URL (e.g. http://executor-1:50061):
# its default is the bound address, 0.0.0.0, which the control plane cannot dial.
ENV TICKETMAX_DATA_DIR=/var/lib/ticketmax \
    TICKETMAX_GRPC_ADDR=0.0.0.0:50051 \
    TICKETMAX_HTTP_ADDR=0.0.0.0:8080 \
    TICKETMAX_EXECUTOR_ADDR=0.0.0.0:50061 \
    LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/ticketmax
VOLUME ["/var/lib/ticketmax"]

# 50051: control-plane gRPC (JobService, ExecutorRegistry, health, reflection)
#  8080: control-plane HTTP (seed REST endpoints, /metrics, /healthz)
# 50061: executor gRPC
EXPOSE 50051 8080 50061

# Passes for either role: the control plane's /healthz answers 200, or the executor's gRPC port
# accepts connections (see deploy/healthcheck.sh).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/ticketmax-healthcheck"]

# SIGTERM drains: the control plane hands its runs over, the executor lets tasks reach a chunk
# boundary and flushes the e-mail outbox and telemetry.
STOPSIGNAL SIGTERM
CMD ["ticketmax-control-plane"]
