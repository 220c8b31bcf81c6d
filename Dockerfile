# syntax=docker/dockerfile:1
# Multi-stage build: the Rust toolchain builds the one binary; the runtime
# image holds only it, CA certificates and a production config.
#   docker build -t lakehouse .
#   docker run -p 3110:3110 -v lakehouse-data:/var/lib/lakehouse \
#     -v /etc/lakehouse/secrets:/etc/lakehouse/secrets:ro lakehouse
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The bundled DuckDB C++ build dominates: cache the registry and target dir between builds.
# Built with the flags the tests and benchmarks use (scripts/build_env.sh): optimised
# with the committed profile (pgo/README.md), rebuilt when the profile changes.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_TARGET_DIR=/src/target bash -c '. scripts/build_env.sh \
      && cargo build --release --locked -p lakehouse --bin lakehouse' \
    && install -m 755 target/release/lakehouse /usr/local/bin/lakehouse

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/lakehouse --shell /usr/sbin/nologin lakehouse \
    && install -d -o lakehouse -g lakehouse /var/lib/lakehouse \
    && install -d /etc/lakehouse/secrets
COPY --from=build /usr/local/bin/lakehouse /usr/local/bin/lakehouse
COPY deploy/lakehouse.production.toml /etc/lakehouse/lakehouse.toml
USER lakehouse
WORKDIR /var/lib/lakehouse
VOLUME ["/var/lib/lakehouse"]
EXPOSE 3110
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/lakehouse"]
CMD ["serve", "--config", "/etc/lakehouse/lakehouse.toml", "--log-format", "json"]
