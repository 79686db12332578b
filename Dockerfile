# syntax=docker/dockerfile:1
# heim-ingress (and heim-proxy) in a distroless image.
#
#   docker build -t ghcr.io/heim-dev/heim-ingress:0.1.0 .
#
# The cache mounts need BuildKit (the default builder since Docker 23).

FROM rust:1-bookworm AS builder
# aws-lc-sys (rustls' crypto) builds its C with cc; cmake is its fallback
# builder, installed so the build does not depend on which one it picks.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# target/ is a cache mount, so the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p heim-ingress -p heim-proxy \
 && mkdir -p /out \
 && cp target/release/heim-ingress target/release/heim-proxy /out/

# glibc, libgcc and CA certificates; no shell. "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/heim-ingress /out/heim-proxy /usr/local/bin/
USER 65532:65532
# http (ACME HTTP-01, redirects), https, admin (/healthz /readyz /metrics)
EXPOSE 8080 8443 10254
ENTRYPOINT ["/usr/local/bin/heim-ingress"]
