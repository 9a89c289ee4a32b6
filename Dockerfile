# Herald: one image, three entry points (`command-service`, `query-service`, `projector`),
# each also understanding `migrate` (see README.md). Build with
#
#   docker build -t herald:local .                 # or: docker compose build
#   docker build --build-arg RUST_VERSION=1.95 .   # pin the toolchain image
#
# Stages:
#   manifests  every Cargo.toml of the workspace plus stub sources, nothing else;
#   build      dependencies compiled against those stubs (a layer cached until a manifest
#              or Cargo.lock changes), then the real sources on top;
#   runtime    Debian bookworm-slim, the three binaries, curl for health checks, and a
#              non-root user.
# Only crates from the crate registry are downloaded while building; nothing else.

# Any Rust release at or above the workspace's rust-version (1.85). The build image and the
# runtime image are both Debian bookworm, so the binaries link against the same glibc.
ARG RUST_VERSION=1

# ---------------------------------------------------------------------------------------
# The workspace's shape without its code. Docker caches COPY by file content (not mtime),
# so while no manifest changes, `COPY --from=manifests` below is a cache hit and so is the
# dependency build after it: editing a .rs file recompiles Herald's crates only.
FROM rust:${RUST_VERSION}-bookworm AS manifests
WORKDIR /src
COPY . .
# For every crate: its Cargo.toml, stub src/lib.rs and src/main.rs, and a stub for each
# target with an explicit `path = "....rs"` ([lib] or [[bin]]). The test
# `migrations/tests/deployment.rs` runs this script and checks that cargo accepts the result.
RUN set -eu; \
    out=/out; \
    mkdir -p "$out"; \
    cp Cargo.toml Cargo.lock "$out/"; \
    find . -path ./target -prune -o -path ./.git -prune \
        -o -name Cargo.toml -not -path ./Cargo.toml -print | while read -r manifest; do \
        crate=$(dirname "$manifest"); \
        mkdir -p "$out/$crate/src"; \
        cp "$manifest" "$out/$crate/Cargo.toml"; \
        printf 'fn main() {}\n' > "$out/$crate/src/lib.rs"; \
        printf 'fn main() {}\n' > "$out/$crate/src/main.rs"; \
        sed -n 's/^path[[:space:]]*=[[:space:]]*"\(.*\.rs\)"/\1/p' "$manifest" | while read -r target; do \
            mkdir -p "$(dirname "$out/$crate/$target")"; \
            printf 'fn main() {}\n' > "$out/$crate/$target"; \
        done; \
    done

# ---------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never
COPY --from=manifests /out/ ./
# Dependencies only (Herald's own crates are the stubs): the slow part, cached.
RUN cargo build --release --locked -p command-service -p query-service -p projector
COPY . .
# COPY keeps the build context's modification times, which may be older than the stub
# artifacts above; touching every source makes cargo rebuild Herald's crates for certain.
# The grep refuses to ship a stub: each real binary carries its usage text.
RUN find . -path ./target -prune -o -type f -exec touch {} + \
    && cargo build --release --locked -p command-service -p query-service -p projector \
    && mkdir -p /out \
    && for bin in command-service query-service projector; do \
        grep -q "usage: $bin" "target/release/$bin" || { echo "stub binary: $bin" >&2; exit 1; }; \
        cp "target/release/$bin" /out/; \
    done

# ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# ca-certificates: TLS to managed databases, Redis or an OTLP endpoint.
# curl: the container health checks (docker-compose.yml) call /health/ready with it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin herald
COPY --from=build /out/ /usr/local/bin/
# Inside a container the services listen on every interface (the defaults are loopback,
# for the local scripts), log JSON, and otherwise take the defaults of
# docs/configuration.md; docker-compose.yml and deploy/kubernetes set the rest.
ENV HERALD_COMMAND_ADDR=0.0.0.0:8080 \
    HERALD_QUERY_ADDR=0.0.0.0:8081 \
    HERALD_PROJECTOR_ADDR=0.0.0.0:8082 \
    HERALD_LOG_FORMAT=json
EXPOSE 8080 8081 8082
# A numeric user, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# Choose the service with the command: `command-service`, `query-service`, `projector`,
# or `<service> migrate`. The services handle SIGTERM themselves (graceful shutdown).
CMD ["command-service"]
