# The forgeops operator image: a static (musl) release build on a distroless, non-root base.
#   docker build -t ghcr.io/forgeops/forgeops:0.1.0 .
# deploy/base/deployment.yaml runs it as `forgeops run --leader-elect --metrics-addr=0.0.0.0:9464
# --log-format=json` with a read-only root filesystem: the operator writes no file.

FROM docker.io/library/rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --release --locked --bin forgeops 2>/dev/null || true
COPY src ./src
COPY crds ./crds
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin forgeops \
    && strip target/release/forgeops

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/forgeops /usr/local/bin/forgeops
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/forgeops"]
CMD ["run"]
