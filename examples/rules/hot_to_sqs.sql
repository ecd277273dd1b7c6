SELECT temperature, topic(4) AS device, timestamp() AS seen_at
FROM 'dt/+/+/+/telemetry'
WHERE temperature > 30
