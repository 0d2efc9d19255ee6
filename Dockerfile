# syntax=docker/dockerfile:1
#
# imagegate: one image, both roles (docs/DEPLOY.md).
#
#   gateway:        docker run -p 8080:8080 -v imagegate-data:/data imagegate
#   inference tier: docker run -p 9090:9090 imagegate inference \
#                     --tls-cert-file … --tls-key-file … --inference-token …
#
# Build from a clean clone (needs BuildKit, the default since Docker 23):
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t imagegate .
#
# Stages: build; fly (Fly.io, see below; `fly deploy` picks it through
# fly.toml's build-target); runtime (the default: distroless, non-root).
# cmd/imagegate/deploy_test.go checks this file against the source tree.

# Keep in step with the go directive in go.mod.
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# A static binary, built with exactly the toolchain named above and the
# dependencies go.sum pins.
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/imagegate ./cmd/imagegate \
 && mkdir -p /out/data

# Fly.io mounts volumes owned by root, which an unprivileged process cannot
# write. This stage starts as root only long enough to hand the data
# directory to uid 65532 (once: later boots find it owned already), then
# replaces itself with imagegate running as that user, without privileges
# to regain. exec keeps imagegate the process Fly signals on shutdown.
FROM debian:bookworm-slim AS fly
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
COPY --from=build /out/imagegate /imagegate
ENV IMAGEGATE_DATA_DIR=/data
EXPOSE 8080 9090
ENTRYPOINT ["/bin/sh", "-c", "set -e; d=\"${IMAGEGATE_DATA_DIR:-/data}\"; if [ \"$(id -u)\" = 0 ]; then mkdir -p \"$d\"; [ \"$(stat -c %u \"$d\")\" = 65532 ] || chown -R 65532:65532 \"$d\"; exec setpriv --reuid=65532 --regid=65532 --clear-groups --no-new-privs \"$0\" \"$@\"; fi; exec \"$0\" \"$@\"", "/imagegate"]
CMD ["serve"]

# The default image: the binary, CA certificates and time zones, a non-root
# user, nothing else. Docker copies the image's /data (owned by 65532) into
# a new named volume; a bind-mounted host directory must be owned by 65532.
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /out/imagegate /imagegate
COPY --from=build --chown=65532:65532 /out/data /data
ENV IMAGEGATE_DATA_DIR=/data
USER 65532:65532
EXPOSE 8080 9090
VOLUME /data
ENTRYPOINT ["/imagegate"]
CMD ["serve"]
