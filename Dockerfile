# The OMS services in one image; docker-compose.yml picks the binary per service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/oms-api /src/target/release/oms-gateway \
     /src/target/release/oms-registry /src/target/release/oms-inventory \
     /src/target/release/oms-status /src/target/release/oms-notifications \
     /src/target/release/oms-payments \
     /src/target/release/oms /usr/local/bin/
COPY scripts/demo-config /usr/local/bin/demo-config
# Where the gateway keeps its signing key (a volume in docker-compose.yml).
RUN mkdir -p /var/lib/oms && chown nobody /var/lib/oms
USER nobody
