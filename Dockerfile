# Clarion in a container: slim, non-root, health-checked on /up.
# It listens on all interfaces, so it needs an app of its own: pass CLARION_APP_ID,
# CLARION_APP_KEY and CLARION_APP_SECRET (or a config file); without one it exits with
# code 2 rather than serve the demo app, whose secret is public.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CLARION_HOST=0.0.0.0 \
    CLARION_PORT=6001

WORKDIR /app
# The exact, hash-checked versions of requirements.lock (both database drivers included),
# then Clarion itself without resolving anything again.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin clarion

USER clarion
EXPOSE 6001 9601
# Metrics listen on all interfaces too inside the container (publish 9601 only internally).
ENV CLARION_METRICS_HOST=0.0.0.0
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["clarion", "health", "--url", "http://127.0.0.1:6001/up"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["clarion"]
CMD ["serve"]
