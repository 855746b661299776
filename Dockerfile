# One image for every process of the service: migrate, api, relay and consumers.
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_PROJECT_ENVIRONMENT=/app/.venv UV_COMPILE_BYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev
COPY alembic.ini ./
COPY alembic ./alembic
COPY service ./service
COPY consumers ./consumers
ENV PATH=/app/.venv/bin:$PATH
USER nobody
CMD ["python", "-m", "service", "api"]
