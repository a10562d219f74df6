# kanipy's own image, built by kanipy (or any builder) from this directory:
#
#   kanipy build --context . --destination registry.example.com/kanipy:latest
#
# The entry point is `kanipy`; `/kaniko/executor` takes Kaniko's argv (no
# `build` word), so a CI file written for Kaniko's image works by changing
# only its image. Run it as root with Docker's default capabilities: no
# privileged mode and no CAP_SYS_ADMIN are needed.
#
# BASE: any image with python3 >= 3.11 and pip. PIP_OPTIONS: extra pip flags,
# e.g. "--no-index --find-links /tmp/kanipy-src/wheels" to build offline from
# wheels put in the context.
ARG BASE=python:3.12-slim
FROM ${BASE}
ARG PIP_OPTIONS=""
# The checkout is bound (rw: pip writes build files next to the sources, and
# they are discarded with the step), so no source file lands in a layer.
RUN --mount=type=bind,source=.,target=/tmp/kanipy-src,rw \
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install -q $PIP_OPTIONS /tmp/kanipy-src \
    && mkdir -p /kaniko/.docker /workspace \
    && printf '#!/bin/sh\n# Kaniko executor argv: the flags of kanipy build.\nexec kanipy build "$@"\n' \
        > /kaniko/executor \
    && chmod 0755 /kaniko/executor \
    && kanipy --version
ENV DOCKER_CONFIG=/kaniko/.docker
WORKDIR /workspace
ENTRYPOINT ["kanipy"]
CMD ["--help"]
