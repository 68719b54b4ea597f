# The forgeops operator image: a static (musl) release build of the operator crate alone (the
# workspace's emulator and development tooling are not built), on a distroless, non-root base.
#   docker build -t forgeops:0.1.0 .
# (the name deploy/base/deployment.yaml runs; to use it in a cluster, build it as your registry's
# name, push it, and name it with kustomize `images:` in an overlay: README, "Install in a cluster")
# deploy/base/deployment.yaml runs it as `forgeops run --leader-elect --metrics-addr=0.0.0.0:9464
# --log-format=json` with a read-only root filesystem: the operator writes no file.

FROM docker.io/library/rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
# Dependencies first, so a source change does not rebuild them. Cargo needs every workspace
# member's manifest to read the lock file; the members' sources are stubs and never built.
COPY Cargo.toml Cargo.lock ./
# The allocator's settings ([env]) and the aliases.
COPY .cargo/config.toml .cargo/
COPY crates/emulator/Cargo.toml crates/emulator/
COPY crates/testenv/Cargo.toml crates/testenv/
COPY crates/dev/Cargo.toml crates/dev/
RUN mkdir -p src crates/emulator/src crates/testenv/src crates/dev/src/bin \
    && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && for c in emulator testenv dev; do echo '' > crates/$c/src/lib.rs; done \
    && echo 'fn main() {}' > crates/dev/src/main.rs && echo 'fn main() {}' > crates/dev/src/bin/forgeops-bench.rs \
    && cargo build --release --locked --package forgeops --bin forgeops 2>/dev/null || true
COPY src ./src
COPY crds ./crds
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --package forgeops --bin forgeops \
    && strip target/release/forgeops

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/forgeops /usr/local/bin/forgeops
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/forgeops"]
CMD ["run"]
