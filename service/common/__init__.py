"""What every process shares: the request's context, logging, the classification of outages,
timeouts and validation messages.

Neutral ground: the API, the relay and the consumers all import from here, and nothing here
imports from any of them, so a consumer process logs a line without loading the HTTP app.
"""
