# One image for web, monitor and worker.
# Stage 1 builds wheels for every dependency (cached as long as requirements.txt is unchanged).
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.txt .
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt
COPY pyproject.toml README.md ./
COPY hydra hydra
COPY web web
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Stage 2: the runtime, as a non-root user.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 hydra
COPY --from=build /wheels /wheels
# Hydra's own wheel stays: the page serves it to volunteers on /join (HYDRA_WHEEL_DIR).
RUN pip install --no-cache-dir /wheels/*.whl && mkdir -p /opt/hydra/dist \
    && mv /wheels/hydra_volunteer-*.whl /opt/hydra/dist/ && rm -rf /wheels
USER hydra
WORKDIR /home/hydra
# numba caches compiled kernels here; warming it at build time makes a new worker's first chunk fast.
ENV NUMBA_CACHE_DIR=/home/hydra/.cache/numba \
    HYDRA_WHEEL_DIR=/opt/hydra/dist \
    RQ_WORKER_CLASS=hydra.worker.HydraWorker \
    PYTHONUNBUFFERED=1
RUN python -c "from hydra.tasks import TASKS; [t.warm_up() for t in TASKS.values()]"
EXPOSE 5000
CMD ["rq", "worker", "hydra"]
