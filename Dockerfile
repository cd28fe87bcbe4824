# syntax=docker/dockerfile:1
#
# One image with both binaries, `migration-api` (the default command) and
# `migration-worker`; docker-compose.yml runs it as both services.
#
#   docker build -t migration-service:local .
#   docker run --rm migration-service:local migration-worker --help
#
# Build and runtime stages use the same Debian release, so the binaries find
# the glibc they were linked against. No Docker engine runs where the tests
# run: tests/tests/compose_file.rs checks this file against the workspace
# and the compose file (every member's manifest, the binaries compose runs,
# the non-root user, the files the sources embed).

# Pinned for reproducible images; at least the workspace's `rust-version`.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build -------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src

# 1. Dependencies only, in their own layer: the manifests, the lock file and
#    empty stub sources. This layer is rebuilt only when a manifest or
#    Cargo.lock changes, not on every source change. Every workspace member
#    needs its manifest and a target here, or cargo refuses the workspace.
COPY Cargo.toml Cargo.lock ./
COPY api/Cargo.toml api/Cargo.toml
COPY shared/Cargo.toml shared/Cargo.toml
COPY worker/Cargo.toml worker/Cargo.toml
COPY tests/Cargo.toml tests/Cargo.toml
RUN for crate in api shared worker tests; do \
        mkdir -p "$crate/src" && touch "$crate/src/lib.rs"; \
    done \
    && echo 'fn main() {}' > api/src/main.rs \
    && echo 'fn main() {}' > worker/src/main.rs \
    && cargo build --release --locked -p migration-api -p migration-worker \
    && rm -rf api/src shared/src worker/src

# 2. The real sources. `touch` them: COPY keeps the mtimes of the build
#    context, which can be older than the stub build, and cargo would then
#    take the stub binaries for up to date. The tests crate keeps its stub:
#    it is a workspace member but not part of the image. `docs/` is copied
#    because sources embed documentation from it (`include_str!`).
COPY shared shared
COPY api api
COPY worker worker
COPY docs docs
RUN find api shared worker -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p migration-api -p migration-worker \
    && cp target/release/migration-api target/release/migration-worker /usr/local/bin/

# ---- runtime -----------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: the trust store any TLS client in the image needs (the
# Redis client is built without TLS today, so REDIS_URL=rediss://... is
# refused at start). curl: the compose health check (the binaries have no
# health-check mode of their own).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid, so that orchestrators can verify "not root" and
# operators can make mounted secrets readable for it.
RUN groupadd --system --gid 10001 migration \
    && useradd --system --uid 10001 --gid migration --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin migration

COPY --from=build /usr/local/bin/migration-api /usr/local/bin/migration-worker /usr/local/bin/

USER 10001:10001
WORKDIR /

# Where migration-api listens by default (API_ADDR=0.0.0.0:9002).
EXPOSE 9002

# No HEALTHCHECK here: the same image runs the worker, which serves no HTTP.
# docker-compose.yml checks the api with curl on /health.
CMD ["migration-api"]
