"""AI routes: an OpenAI- and Anthropic-compatible front over model providers (issue 18, first slice).

endpoint.py serves the front ends; targets.py says where each model goes; anthropic_provider.py and
openai_provider.py translate between the two wire formats; build.py turns config into endpoints.
"""
