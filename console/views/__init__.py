"""The web console: server-rendered pages that call the same domain functions as the API.

Every view that takes a service id goes through `Service.objects.get_visible`, so another user's
service is a 404 exactly like a missing one. Actions that change anything are POST only (and CSRF-checked).
No page asks a node agent: health is what the workers last saved on the rows (routing/health.py),
shown with its age; only the swap itself (workflows.swap) checks live, under the service's lock,
and the logs fragment, which the service page loads after it is shown (an agent may be slow)."""
