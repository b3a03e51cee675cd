# tamma-worker and tamma-orchestrator in one image (docs/deploy.md, deploy/k8s/).
#
#   docker build -t tamma:0.1.0 .
#   docker run --rm --privileged tamma:0.1.0 tamma-worker run -- /bin/echo hi
#   docker run --rm -e TAMMA_DB_URL=sqlite:/var/lib/tamma-orchestrator/tamma.db \
#       -p 8080:8080 tamma:0.1.0 tamma-orchestrator serve --listen 0.0.0.0:8080
#
# Both stages are Debian 12, and everything comes from Debian 12 packages, as for the
# project's own builds (scripts/setup.sh); tests/packaging/deploy_test.py checks it.

# ---- build: the compiler and the -dev packages ------------------------------------------
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config \
      libcurl4-openssl-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev \
      libsqlite3-dev libpq-dev libboost-dev libseccomp-dev libssl-dev libpugixml-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -G Ninja -S . -B /build -DCMAKE_BUILD_TYPE=Release \
      -DTAMMA_BUILD_TESTS=OFF -DTAMMA_BUILD_BENCH=OFF \
 && cmake --build /build --target tamma-worker tamma-orchestrator \
 && strip /build/src/cli/tamma-worker /build/src/orchestrator/tamma-orchestrator

# ---- runtime: the shared libraries and the tools tasks and probes use -------------------
FROM debian:12-slim AS runtime
# Runtime libraries of both binaries (what dpkg-shlibdeps finds for the .deb), plus:
# e2fsprogs (mkfs.ext4 for per-task disk limits), git and ca-certificates (the repository
# checkout), tini (PID 1 that forwards signals and reaps), curl (the orchestrator's
# readiness probe, which needs the admin token in a header).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libcurl4 libspdlog1.10 libfmt9 libsqlite3-0 libpq5 libseccomp2 libssl3 libpugixml1v5 \
      e2fsprogs git ca-certificates tini curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --uid 10001 --home-dir /var/lib/tamma-orchestrator \
      --shell /usr/sbin/nologin tamma-orchestrator \
 && mkdir -p /etc/tamma-worker /var/lib/tamma-worker/workspaces /var/lib/tamma-orchestrator \
 && chown tamma-orchestrator:tamma-orchestrator /var/lib/tamma-orchestrator
COPY --from=build /build/src/cli/tamma-worker /build/src/orchestrator/tamma-orchestrator /usr/bin/
# The worker's configuration comes from a mounted /etc/tamma-worker/config.json (a
# Kubernetes ConfigMap) and its token from a mounted secret file (TAMMA_TOKEN_FILE); the
# image holds neither.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["tamma-worker", "--help"]
