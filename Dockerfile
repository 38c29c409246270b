# Recarga's container recipe: the `recarga` binary built with the locked
# dependencies, run by a non-root user from a small Debian image.
#
# Not verified on the machines this was written on (they can reach no image
# registry): see README.md, "Deploy". What can be checked without Docker is
# checked by crates/server/tests/it/deploy.rs (this file's shape, and the binary
# starting with only this file's ENV and railway.toml's variables).
#
#   docker build -t recarga .
#   docker run -p 8080:8080 -e DATABASE_URL=postgres://… -e ADMIN_KEY=… \
#     -e RECARGA_UPSTREAM=latcom -e LATCOM_BASE_URL=… recarga

# ---- build: the release binary, exactly as Cargo.lock pins it ----
FROM rust:1.95-trixie AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p recarga-server --bin recarga \
 && install -D -m 0755 target/release/recarga /out/recarga

# ---- run: the binary, CA roots for Latcom's HTTPS, an unprivileged user ----
FROM debian:trixie-slim AS run
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 recarga \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/recarga --create-home recarga
COPY --from=build /out/recarga /usr/local/bin/recarga
USER 10001:10001
WORKDIR /var/lib/recarga
# Production by default: the sandbox, a missing or weak ADMIN_KEY and the
# embedded SQLite database are refused at start (RECARGA_ALLOW_SQLITE=1 allows
# SQLite under RECARGA_DATA_DIR: mount a volume there). PORT is what Railway
# injects; elsewhere 8080.
ENV RECARGA_ENV=production \
    RECARGA_BIND=0.0.0.0 \
    PORT=8080 \
    RECARGA_LOG_FORMAT=json \
    RECARGA_DATA_DIR=/var/lib/recarga/data
EXPOSE 8080
# No curl in the image: the binary asks its own /health (200 only while the
# database answers) on PORT.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["recarga", "probe"]
# Exec form: recarga is PID 1 and gets SIGTERM itself (it drains in-flight
# upstream calls before exiting).
CMD ["recarga", "serve"]
