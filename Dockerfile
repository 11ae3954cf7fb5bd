# One image for every role: migrate, worker, beat, web and the sandbox differ only by command.
# Stage 1 builds the wheel from the sources; stage 2 installs that wheel and the locked
# dependencies into a slim image that holds no source tree. Every package comes from a lock
# with hashes: requirements-build.lock (what builds the wheel: pyproject's build-system) and
# requirements.lock (what runs it). The wheel is built without build isolation, which would
# fetch the build tools again, unpinned.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements-build.lock /tmp/requirements-build.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements-build.lock
COPY . .
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/requirements.lock \
    && useradd --create-home --uid 10001 recon
USER recon
WORKDIR /home/recon
# 8790: recon web; 8780: recon sandbox; 9460: /metrics of recon worker and beat when
# RECON_METRICS_PORT=9460 (compose.yaml sets it).
EXPOSE 8790 8780 9460
# Healthy while every worker or beat in the container answers on the /metrics it announces
# (python -m worker.observe.health; it needs RECON_METRICS_PORT). compose.yaml gives each role a
# check of its own (celery ping for the worker, the pid file for beat, a page for web).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "worker.observe.health"]
CMD ["recon", "--help"]
