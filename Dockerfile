# The infra image: one static-runtime binary, no shell, not root.
#
#   docker build -t infra .                      # where registries are reachable
#   scripts/image                                # here: the same runtime stage, built with buildah
#
# Runs the server by default (SQLite in /var/lib/infra); the same image runs
# a connector (`connector --config ...`) or any CLI command. See docs/deploy.md.

# --- build -------------------------------------------------------------------
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The commit for `infra --version` (the build context has no .git).
ARG INFRA_COMMIT=unknown
ENV INFRA_COMMIT=${INFRA_COMMIT} CARGO_TARGET_DIR=/src/target
RUN cargo build --release --locked -p infra --bin infra \
 && install -D -m 0755 target/release/infra /out/usr/local/bin/infra \
 && install -d -m 0700 -o 65532 -g 65532 /out/var/lib/infra

# --- runtime -----------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates, /etc/passwd with `nonroot`
# (65532), and nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
ENV HOME=/var/lib/infra INFRA_DATA_DIR=/var/lib/infra
VOLUME ["/var/lib/infra"]
# 4443: the server's one port (API, gateway, tunnels). 9090: metrics, if enabled.
EXPOSE 4443 9090
ENTRYPOINT ["/usr/local/bin/infra"]
CMD ["server", "--listen", "0.0.0.0:4443"]
