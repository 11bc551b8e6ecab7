"""The pipeline: accept an event, batch staged numbers into chunks, push chunks to providers."""
