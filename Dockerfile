# One image for the API, the migrations and the workers of docker-compose.yml.
# torch's default Linux wheel carries CUDA, so the same image runs the GPU workers.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 1000 noisefa
WORKDIR /app

COPY pyproject.toml README.md ./
COPY noisefa ./noisefa
COPY engine ./engine
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
RUN pip install .

USER noisefa
ENV NOISEFA_HOME=/home/noisefa/.noisefa
EXPOSE 8000
CMD ["noisefa", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
