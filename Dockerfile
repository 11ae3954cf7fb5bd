# One image for every role: migrate, worker, beat and the sandbox differ only by command.
# Stage 1 builds the wheel from the sources; stage 2 installs that wheel and the locked
# dependencies (hashes checked) into a slim image that holds no source tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir "build>=1.2,<2" \
    && python -m build --wheel --outdir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/requirements.lock \
    && useradd --create-home --uid 10001 recon
USER recon
WORKDIR /home/recon
CMD ["recon", "--help"]
