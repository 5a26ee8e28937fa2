"""AI routes: an OpenAI- and Anthropic-compatible front over model providers (issue 18).

endpoint.py serves the front ends; targets.py says where each model goes (names, aliases, virtual
models, failover); anthropic_provider.py and openai_provider.py translate between the two wire formats;
sse.py reads event streams; usage.py counts tokens; guard.py is promptGuard; build.py turns config
into endpoints.
"""
