# edgesim image: the gateway by default (`docker run -p 127.0.0.1:8883:8883 ... edgesim`), and every service of
# compose.yaml (fleet, edge, edge-devices) with its own command. See README, "Containers".
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY devices ./devices
COPY mqttwire ./mqttwire
# gateway/examples links to ./examples: the examples ship inside the package.
COPY examples ./examples
RUN pip install --no-cache-dir . && rm -rf build ./*.egg-info
# A non-root user owns the data and certificate directories; new named volumes take that ownership from the image.
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home edgesim \
    && mkdir -p /data /certs && chown edgesim:edgesim /data /certs
USER edgesim
ENV EDGESIM_HOME=/data EDGESIM_CERTS=/certs
VOLUME ["/data", "/certs"]
# 8883 MQTT/mTLS, 8084 MQTT/WSS, 8443 HTTPS publish, 4566 HTTP API; 1883 an edge core's local plain MQTT.
EXPOSE 8883 8084 8443 4566 1883
# Inside a container the listeners must bind every interface; publish only the ports you need, on 127.0.0.1.
CMD ["edgesim", "up", "--host", "0.0.0.0", "--rules", "/app/examples/rules"]
