SELECT temperature, battery, topic(2) AS device, timestamp() AS seen_at
FROM 'demo/+/telemetry'
WHERE temperature > 30
