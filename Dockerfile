# One image, three entry points: command-service, query-service, projector.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p command-service -p query-service -p projector

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 herald
COPY --from=build /src/target/release/command-service /src/target/release/query-service /src/target/release/projector /usr/local/bin/
USER herald
