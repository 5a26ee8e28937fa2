"""What the gateway tells operators: Prometheus metrics (metrics.py, served by stats.py) and access
logs (access_log.py), fed per HTTP request (requests.py) and per MCP message (federation's observer)."""
