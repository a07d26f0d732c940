# Container image for elevate-import-exporter.
#
#   docker build -t elevate-import-exporter .
#   docker run --rm elevate-import-exporter --help
#
# Two stages: the first builds a wheel and installs it into a virtual environment,
# the second copies only that environment onto a clean base. Compilers, pip caches,
# the wheel and the sources stay behind in the first stage.
#
# Classic builder compatible on purpose (no BuildKit-only syntax), so the image
# builds the same on every Docker engine.

FROM python:3.12-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# The venv is created without pip of its own: the base image's pip installs into it
# (--python), so the final image carries no installer. A second venv holds the
# build backend; it stays in this stage.
RUN python -m venv --without-pip /venv \
    && python -m venv /build

WORKDIR /src

# Dependencies and build backend first, read from pyproject.toml, in their own
# layer: a change to the exporter's code then rebuilds in seconds, downloading
# nothing.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['project']['dependencies']))" > requirements.txt \
    && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires']))" > build-requirements.txt \
    && python -m pip --python /venv/bin/python install --no-cache-dir -r requirements.txt \
    && python -m pip --python /build/bin/python install --no-cache-dir -r build-requirements.txt

COPY README.md ./
COPY exporter ./exporter
RUN python -m pip --python /build/bin/python wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /wheels . \
    && python -m pip --python /venv/bin/python install --no-cache-dir /wheels/*.whl \
    && python -m pip --python /venv/bin/python check

FROM python:3.12-slim

# Keep in step with exporter/elevate_import_exporter/__init__.py (the test suite checks that it is).
ARG VERSION=0.6.0

LABEL org.opencontainers.image.title="elevate-import-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the status of Voyado Elevate (Apptus eSales) background imports" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/elevate-import-exporter/elevate-import-exporter" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed UID/GID, so that secrets and ids files mounted from the host can be made
# readable for exactly this user (and Kubernetes' runAsUser can name it).
RUN groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid exporter --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin exporter

# The same path as in the build stage: the venv's scripts and its python symlink
# point at absolute paths, and both stages share the base image's interpreter.
COPY --from=build /venv /venv

ENV PATH="/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ELEVATE_EXPORTER_STORAGE_PATH=/data/elevate-import-exporter.db

# The store (tracked imports and their history) lives in a volume, so it outlives the
# container; owned by the exporter's user, since a named volume takes this folder's owner.
RUN mkdir /data && chown 10001:10001 /data && chmod 0700 /data
VOLUME ["/data"]

USER 10001:10001

EXPOSE 10025

# No curl in the image: Python asks /-/healthy itself. It follows the port in
# ELEVATE_EXPORTER_LISTEN_ADDRESS (set the listen address there rather than with
# --web.listen-address, or the check keeps asking the default port 10025), turns a
# wildcard host into loopback and ignores any HTTP(S)_PROXY meant for Elevate.
# With a --web.config.file it still works: plain HTTP first, then HTTPS without
# verifying the certificate (loopback, liveness only); a 401 (basic auth) and a TLS
# refusal (client certificate required) count as alive, since the server answered.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, ssl, sys, urllib.request as u\nh, _, p = (os.environ.get('ELEVATE_EXPORTER_LISTEN_ADDRESS') or ':10025').replace(',', ' ').split()[0].rpartition(':')\nh = h.strip('[]')\nh = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '127.0.0.1'}.get(h, h)\na = ('[' + h + ']' if ':' in h else h) + ':' + p + '/-/healthy'\nc = ssl.create_default_context()\nc.check_hostname = False\nc.verify_mode = ssl.CERT_NONE\no = u.build_opener(u.ProxyHandler({}), u.HTTPSHandler(context=c))\nf = []\nfor s in ('http://', 'https://'):\n    try:\n        o.open(s + a, timeout=2)\n        sys.exit()\n    except Exception as e:\n        r = getattr(e, 'reason', e)\n        if getattr(e, 'code', 0) == 401 or any(isinstance(x, ssl.SSLError) for x in (e, r)):\n            sys.exit()\n        f.append(f'{s}{a}: {r}')\nsys.exit('; '.join(f))\n"]

# Exec form: the exporter is PID 1 and receives docker stop's SIGTERM itself.
ENTRYPOINT ["elevate-import-exporter"]
CMD ["run"]
