# syntax=docker/dockerfile:1
# One image with the three gateway binaries and bff-all (all three in one process); the
# container's command picks one:
#   docker build -t bff-gateway .
#   docker run --rm -p 8080:8080 -e BFF_LISTEN_ADDR=0.0.0.0:8080 bff-gateway /bff-web
# Multi-stage: a full Rust toolchain builds, a distroless non-root image runs (no shell, no
# package manager; TLS roots are compiled in, so no CA bundle is needed).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bff-web -p bff-mobile -p bff-partner -p bff-all \
 && mkdir -p /out \
 && cp target/release/bff-web target/release/bff-mobile target/release/bff-partner \
    target/release/bff-all /out/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /
USER nonroot:nonroot
ENV BFF_LISTEN_ADDR=0.0.0.0:8080 \
    BFF_TELEMETRY__FORMAT=json
EXPOSE 8080
ENTRYPOINT []
CMD ["/bff-web"]
