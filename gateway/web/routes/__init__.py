"""HTTP routes: APIv4, APIv3, health and problem-type documentation."""
