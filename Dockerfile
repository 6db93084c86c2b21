# syntax=docker/dockerfile:1
#
# Signalbox container image: `docker build -t signalbox .` (see docs/deployment.md).
# Two stages: a Rust builder and a distroless runtime that holds only the binary.
# Linted with hadolint in ./scripts/test; no container engine runs on the development
# machines, so the image is not built there.

# ---- builder -------------------------------------------------------------------------------
# The toolchain the crate is developed and tested with (Cargo.toml's rust-version is 1.90).
# Debian 12 (bookworm), the same glibc as the runtime stage.
FROM rust:1.95-bookworm AS builder
WORKDIR /build

# Dependencies first, in a layer that only the manifests and Cargo.lock invalidate: build them
# against a placeholder crate. Cargo.toml is a workspace: the server package declares a test
# and three benches, and the load generator (crates/signalbox-bench) is a member whose manifest
# cargo reads to load the workspace, so their files get placeholders too, or the manifests
# do not load. Only the server is built (-p signalbox --bin signalbox): the load generator
# and its dependencies (histograms, plots, progress bars) never enter the image.
COPY Cargo.toml Cargo.lock ./
COPY crates/signalbox-bench/Cargo.toml crates/signalbox-bench/
RUN mkdir -p src benches tests/it crates/signalbox-bench/src \
 && printf 'fn main() {}\n' > src/main.rs \
 && : > src/lib.rs \
 && : > crates/signalbox-bench/src/lib.rs \
 && for f in benches/hot_path.rs benches/outbox.rs benches/sigv4.rs tests/it/main.rs crates/signalbox-bench/src/main.rs; do printf 'fn main() {}\n' > "$f"; done \
 && cargo build --release --locked -p signalbox --bin signalbox \
 && rm -rf src

# The revision `signalbox --version` shows: no .git is copied into the build, so pass it,
# e.g. --build-arg SIGNALBOX_GIT_REV="$(git rev-parse --short=12 HEAD)"; else "unknown".
ARG SIGNALBOX_GIT_REV
COPY build.rs ./
COPY src ./src
# COPY keeps the sources' modification times, which can be older than the placeholder's
# build: touch the crate roots so cargo rebuilds the real crate. The release profile keeps
# line tables for backtraces (about 120 of the binary's 145 MB); compressing them, not
# stripping them, makes it about 55 MB and panics still name file:line.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked -p signalbox --bin signalbox \
 && mkdir -p /out/data \
 && objcopy --compress-debug-sections=zlib target/release/signalbox /out/signalbox

# ---- runtime -------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc and CA certificates (rediss:// and the AWS SDK verify TLS
# against /etc/ssl/certs), no shell, no package manager; the :nonroot tag runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /out/signalbox /usr/local/bin/signalbox
# An empty directory the non-root user owns, for `[storage] data_dir = "/var/lib/signalbox"`
# (the routing outbox); mount a volume there to keep the outbox across container restarts.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/signalbox
WORKDIR /var/lib/signalbox
USER 65532:65532

# Listen on every interface inside the container (the built-in default is loopback only);
# JSON logs on stderr. Credentials (SIGNALBOX_JWT_SECRET, SIGNALBOX_API_KEYS) come from the
# orchestrator: without them `serve` exits 2.
ENV SIGNALBOX_LISTEN=0.0.0.0:8080 \
    SIGNALBOX_LOG_FORMAT=json
EXPOSE 8080

# SIGTERM starts the graceful shutdown: /ready turns 503, clients get close 1001, the process
# exits 0 within shutdown.grace_period (10 s). The binary is PID 1 and handles SIGTERM and
# SIGINT itself, and it starts no child processes, so no init is needed. Give the
# orchestrator a stop timeout longer than the grace period (docker: --stop-timeout 15).
STOPSIGNAL SIGTERM

# No HEALTHCHECK: distroless has no shell or curl to run one, and the binary has no probe
# subcommand. The orchestrator checks over HTTP instead: the ECS/ALB target group and the
# compose file's HAProxy probe GET /health (see docs/operations.md for /health vs /ready).
ENTRYPOINT ["/usr/local/bin/signalbox"]
CMD ["serve"]
