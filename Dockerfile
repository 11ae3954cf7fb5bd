# One image for every role: migrate, worker, beat and the sandbox differ only by command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY models ./models
COPY worker ./worker
COPY sandbox ./sandbox
RUN pip install --no-cache-dir -e . && useradd --create-home recon
USER recon
CMD ["recon", "--help"]
