# edgesim gateway image: `docker compose up` (see compose.yaml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY devices ./devices
COPY examples ./examples
RUN pip install --no-cache-dir .
ENV EDGESIM_HOME=/data EDGESIM_CERTS=/certs
VOLUME ["/data", "/certs"]
EXPOSE 8883 8084 8443 4566
# Inside a container the listeners must bind every interface; publish only the ports you need.
CMD ["edgesim", "up", "--host", "0.0.0.0", "--rules", "/app/examples/rules"]
