"""crowdqc service: HTTP API, background jobs and the offline command line."""
