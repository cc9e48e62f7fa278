"""The REST API: one viewset per resource; each action validates, then calls one workflow."""
